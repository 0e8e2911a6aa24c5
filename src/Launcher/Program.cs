using System.CommandLine;
using System.Diagnostics;
using System.Runtime.InteropServices;
using Tibet.Core.Audit;
using Tibet.Core.Identity;
using Tibet.Core.Interop;
using Tibet.Core.Paging;
using Tibet.Core.Crypto;
using Tibet.Core.Paging.Eviction;
using Tibet.Core.Paging.Huge;
using Tibet.Core.Policy;
using Tibet.Launcher;

// tibet-run [options] -- CMD ARGS...: runs an unmodified program on encrypted RAM.
// (tibet-run --custodian ...: the custodian tibet-run starts beside the program.)
return args.Length > 0 && args[0] == CustodianProcess.Argument ? CustodianProcess.Run(args) : Launcher.Run(args);

internal static partial class Launcher
{
    private const int ExitRefused = 2;
    private const int ExitNotFound = 127;
    private const int ExitCannotExecute = 126;

    private const string Description = """
        Usage: tibet-run [options] -- COMMAND [ARGS...]

        Runs COMMAND with its large allocations in encrypted RAM. Memory the program
        allocates with malloc or maps anonymously, in blocks of at least --threshold, lives
        in userfaultfd arenas: at most --budget of it is plaintext at any time (64 MiB per
        process unless told otherwise), and the rest exists only as AES-256-GCM
        ciphertext, decrypted page by page when touched. The
        program is not modified; tibet-run preloads libtibet.so into it (and into the
        programs it executes, unless --no-inherit). Static binaries and programs that
        bypass libc's malloc and mmap are not covered.

        SIZE is a number of bytes with an optional K, M or G suffix (powers of 1024): 4096, 64K, 256M, 2G.

        Sealed models (tibet seal) open only for an identity they are sealed to, holding a
        clearance claim from an issuer they trust: give --identity and --claim. The secret
        identity reaches the program through an inherited memfd_secret descriptor, never
        through the environment, and programs COMMAND executes do not get it unless
        --inherit-identity. Without a valid identity and claim, a sealed model is dead
        material: its weights read as zeros, one line on stderr says which check failed,
        and the audit log records it, as it records every access.

        Environment set for COMMAND: LD_PRELOAD (libtibet.so prepended), TIBET_BUDGET,
        TIBET_THRESHOLD, TIBET_COMPRESSION, TIBET_VERBOSE, TIBET_STATS_JSON, TIBET_NO_INHERIT,
        TIBET_REQUIRE_ENCRYPTION, TIBET_DUMPABLE, and with --identity TIBET_IDENTITY_FD and
        TIBET_INHERIT_IDENTITY; TIBET_AUDIT_LOG with --audit-log. A set-user-ID or
        set-group-ID program ignores all TIBET_* variables. DOTNET_* and COMPlus_* are removed.

        Exit status: COMMAND's; 128+N if it died of signal N; 2 if tibet refused to run it
        (bad option, missing library, an unusable identity or claim, or
        --require-encryption without userfaultfd); 127 if
        COMMAND cannot be run.

        Examples:
          tibet-run -- redis-server --port 7000
          tibet-run --budget 256M -- redis-server --port 7000
          tibet-run --stats -- python3 train.py
          tibet-run --require-encryption --budget 1G --threshold 64K -- ./server
          tibet-run --identity alice.id --claim alice.claim -- llama-cli -m model.sealed.gguf
        """;

    private static readonly string[] OptionsWithValues =
        ["--budget", "--threshold", "--compression", "--eviction", "--cipher", "--serve", "--huge-pages", "--stats-json", "--library", "--identity", "--claim", "--audit-log", "--passphrase-file", "--metrics", "--user"];

    public static int Run(string[] args)
    {
        var (ours, command) = SplitCommand(args);

        var budget = new Option<string?>("--budget") { Description = $"Resident plaintext budget per process: at most SIZE of the program's encrypted memory is plaintext at once; the rest is sealed. Default: {ResidentBudget.Describe(ResidentBudget.DefaultBytes)} (chosen by measurement, see bench/results). 'unlimited' seals nothing.", HelpName = "SIZE|unlimited" };
        var threshold = new Option<string?>("--threshold") { Description = "Smallest malloc or mmap that is redirected into encrypted arenas. Default: 1M (chosen by measurement, see bench/results).", HelpName = "SIZE" };
        var compression = new Option<string?>("--compression") { Description = "Compress pages with zstd before sealing: off (default) or auto (keeps a page compressed only if it halves).", HelpName = "off|auto" };
        var eviction = new Option<string?>("--eviction") { Description = "Which resident page is sealed first when the budget is reached: scan-resistant (default; keeps a stable set of pages that come back, so a model read in the same order every token hits on most of the budget) or fifo (the oldest first).", HelpName = "scan-resistant|fifo" };
        var cipher = new Option<string?>("--cipher") { Description = "The cipher that seals pages in RAM: aes-256-gcm (default) or aegis-256 (libsodium; about twice as fast on CPUs with AES instructions, see bench/results). Sealed model files keep AES-256-GCM.", HelpName = "aes-256-gcm|aegis-256" };
        var serve = new Option<string?>("--serve") { Description = "Who serves the program's own large allocations: custodian (default: the process that also serves its forked children and daemons; their keys never enter the program) or program (its own engine, inside it, with their keys in its memory; faster under eviction pressure, see bench/results). Model maps (GGUF) are the program's engine's either way.", HelpName = "custodian|program" };
        var hugePages = new Option<string?>("--huge-pages") { Description = "Serve read-only model maps (GGUF) in 2 MiB pages from the hugetlb pool, at most SIZE of them resident, in addition to --budget. tibet-run reserves the pages (root: vm.nr_hugepages) for the run and gives them back after. A model larger than SIZE is read from its file again when its pages come back (sealed models: decrypted again); nothing of it is ever sealed into RAM.", HelpName = "SIZE" };
        var stats = new Option<bool>("--stats") { Description = "Print a summary of faults, evictions and memory to stderr when COMMAND exits." };
        var statsJson = new Option<string?>("--stats-json") { Description = "Write the same statistics as JSON to FILE.", HelpName = "FILE" };
        var verbose = new Option<int>("--verbose", "-v") { Description = "Report start-up and exit of each interposed process on stderr (-vv: more).", Arity = ArgumentArity.Zero };
        var requireEncryption = new Option<bool>("--require-encryption") { Description = "Never run unencrypted: refuse to start (exit 2) when userfaultfd cannot be used or LD_PRELOAD cannot reach COMMAND (static or set-user-ID), and fail with ENOMEM any large allocation tibet cannot encrypt at run time (a region exhausted, a forked child, an internal failure), each with one line on stderr." };
        var quiet = new Option<bool>("--quiet", "-q") { Description = "No start-up line about the budget in effect." };
        var noInherit = new Option<bool>("--no-inherit") { Description = "Programs that COMMAND executes run without tibet." };
        var library = new Option<string?>("--library") { Description = "Use this libtibet.so instead of the installed one.", HelpName = "PATH", Hidden = true };
        var identity = new Option<string?>("--identity") { Description = "Secret identity (tibet keygen) that opens sealed models sealed to it.", HelpName = "FILE.id" };
        var claim = new Option<string?>("--claim") { Description = "Clearance claim (tibet claim issue) for that identity.", HelpName = "FILE.claim" };
        var inheritIdentity = new Option<bool>("--inherit-identity") { Description = "Programs that COMMAND executes get the identity too." };
        var passphraseFile = new Option<string?>("--passphrase-file") { Description = "Read the identity's passphrase from FILE (default: $TIBET_PASSPHRASE_FILE, else ask on the terminal).", HelpName = "FILE" };
        var auditLog = new Option<string?>("--audit-log") { Description = "Append access decisions to FILE. " + AuditLogLocation.Description, HelpName = "FILE" };
        var metrics = new Option<string?>("--metrics") { Description = "Serve the live statistics of COMMAND, of the processes it starts under tibet and of their forked children in the Prometheus text format over HTTP on HOST:PORT (use 127.0.0.1 unless the network is trusted). 'tibet stats' shows the same on the terminal.", HelpName = "HOST:PORT" };
        var dumpable = new Option<bool>("--dumpable") { Description = "Leave COMMAND dumpable, for debugging (core dumps, gdb -p, /proc/PID/mem by the same user). By default it is made non-dumpable, so that processes of the same user cannot read its memory and keys." };

        var user = new Option<string?>("--user") { Description = "Run COMMAND as user NAME (tibet-run must run as root). The custodian keeps tibet-run's credentials, so NAME's processes cannot read its memory. COMMAND receives a /dev/userfaultfd descriptor tibet-run opened, so that it can use userfaultfd without vm.unprivileged_userfaultfd (PostgreSQL refuses to run as root).", HelpName = "NAME" };

        var root = new RootCommand(Description);
        foreach (Option option in new Option[] { budget, threshold, compression, eviction, cipher, serve, hugePages, stats, statsJson, verbose, quiet, requireEncryption, noInherit, library, identity, claim, inheritIdentity, passphraseFile, auditLog, dumpable, metrics, user })
            root.Options.Add(option);
        var commandArgument = new Argument<string[]>("COMMAND") { Description = "The program to run and its arguments, after --.", Arity = ArgumentArity.ZeroOrMore };
        root.Arguments.Add(commandArgument);

        int exitCode = ExitRefused;
        root.SetAction(result =>
        {
            if (result.GetValue(identity) == null && (result.GetValue(claim) != null || result.GetValue(inheritIdentity) || result.GetValue(passphraseFile) != null))
            {
                Fail("--claim, --inherit-identity and --passphrase-file need --identity FILE.id");
                return;
            }
            if (command.Length == 0)
            {
                Fail("no COMMAND given. Usage: tibet-run [options] -- COMMAND [ARGS...]");
                return;
            }
            if (!TryBuildOptions(result, budget, threshold, compression, eviction, cipher, stats, statsJson, verbose, requireEncryption, noInherit, library, command, out var options))
                return;
            options = options with
            {
                Quiet = result.GetValue(quiet),
                IdentityPath = result.GetValue(identity),
                ClaimPath = result.GetValue(claim),
                InheritIdentity = result.GetValue(inheritIdentity),
                PassphraseFile = result.GetValue(passphraseFile),
                AuditLogPath = result.GetValue(auditLog) is { } log ? Path.GetFullPath(log) : null,
                Dumpable = result.GetValue(dumpable),
                User = result.GetValue(user),
            };
            switch (result.GetValue(serve))
            {
                case null: break;
                case "program": options = options with { ServeByCustodian = false, ServeChosen = true }; break;
                case "custodian": options = options with { ServeByCustodian = true, ServeChosen = true }; break;
                case var other:
                    Fail($"--serve '{other}' is not 'program' or 'custodian'");
                    return;
            }
            if (result.GetValue(metrics) is { } metricsText)
            {
                if (!MetricsServer.TryParse(metricsText, out var endPoint, out string? problem))
                {
                    Fail(problem!);
                    return;
                }
                options = options with { Metrics = endPoint };
            }
            if (result.GetValue(hugePages) is { } huge)
            {
                if (!SizeParser.TryParse(huge, out long hugeBytes) || hugeBytes < 2 << 20)
                {
                    Fail($"--huge-pages '{huge}' is not a size of at least 2M; expected {SizeParser.Syntax}");
                    return;
                }
                options = options with { HugePagesBytes = hugeBytes & ~((2L << 20) - 1) };
            }
            exitCode = Launch(options);
        });

        ParseResult parsed = root.Parse(ours);
        if (parsed.Errors.Count > 0 && !ours.Contains("--help") && !ours.Contains("-h"))
        {
            foreach (var error in parsed.Errors)
                Console.Error.WriteLine($"tibet-run: {error.Message}");
            Console.Error.WriteLine("Try 'tibet-run --help'.");
            return ExitRefused;
        }
        int invoked = parsed.Invoke();
        return ours.Contains("--help") || ours.Contains("-h") ? invoked : exitCode;
    }

    /// <summary>Everything after "--", or from the first word that is not an option, is
    /// the command: its own options are never taken for ours.</summary>
    private static (string[] Ours, string[] Command) SplitCommand(string[] args)
    {
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "--")
                return (args[..i], args[(i + 1)..]);
            if (OptionsWithValues.Contains(args[i]))
            {
                i++;
                continue;
            }
            if (!args[i].StartsWith('-'))
                return (args[..i], args[i..]);
        }
        return (args, []);
    }

    private static bool TryBuildOptions(ParseResult result, Option<string?> budget, Option<string?> threshold, Option<string?> compression, Option<string?> eviction, Option<string?> cipher,
        Option<bool> stats, Option<string?> statsJson, Option<int> verbose, Option<bool> requireEncryption, Option<bool> noInherit,
        Option<string?> library, string[] command, out LaunchOptions options)
    {
        options = null!;
        long budgetBytes = ResidentBudget.DefaultBytes, thresholdBytes = 1 << 20;
        string? budgetText = result.GetValue(budget);
        if (budgetText == ResidentBudget.UnlimitedWord)
            budgetBytes = ResidentBudget.Unlimited;
        else if (budgetText != null && (!SizeParser.TryParse(budgetText, out budgetBytes) || budgetBytes < 4096))
            return Fail($"--budget '{budgetText}' is not a size of at least 4K, nor '{ResidentBudget.UnlimitedWord}'; expected {SizeParser.Syntax}");
        if (result.GetValue(threshold) is { } t && (!SizeParser.TryParse(t, out thresholdBytes) || thresholdBytes < 4096))
            return Fail($"--threshold '{t}' is not a size of at least 4K; expected {SizeParser.Syntax}");
        CompressionMode mode;
        switch (result.GetValue(compression))
        {
            case null or "off": mode = CompressionMode.Off; break;
            case "auto": mode = CompressionMode.Auto; break;
            case var other: return Fail($"--compression '{other}' is not 'off' or 'auto'");
        }
        string evictionName = result.GetValue(eviction) ?? EvictionPolicy.ScanResistant.Name;
        if (EvictionPolicy.FromName(evictionName) == null)
            return Fail($"--eviction '{evictionName}' is not 'scan-resistant' or 'fifo'");
        string cipherName = result.GetValue(cipher) ?? PageCipherSuite.Aes256Gcm.Name;
        if (PageCipherSuite.FromName(cipherName) == null)
            return Fail($"--cipher '{cipherName}' is not {PageCipherSuite.Names}");
        int verbosity = result.Tokens.Count(token => token.Value is "-v" or "--verbose")
                        + result.Tokens.Where(token => token.Value.StartsWith("-vv", StringComparison.Ordinal)).Sum(token => token.Value.Length - 2);
        options = new LaunchOptions
        {
            BudgetBytes = budgetBytes,
            BudgetIsDefault = budgetText == null,
            ThresholdBytes = thresholdBytes,
            Compression = mode,
            Eviction = evictionName,
            Cipher = cipherName,
            Stats = result.GetValue(stats),
            StatsJsonPath = result.GetValue(statsJson),
            Verbosity = Math.Min(2, verbosity),
            RequireEncryption = result.GetValue(requireEncryption),
            NoInherit = result.GetValue(noInherit),
            LibraryOverride = result.GetValue(library),
            Command = command,
        };
        return true;
    }

    private static int Launch(LaunchOptions options)
    {
        string library = Path.GetFullPath(options.LibraryOverride
            ?? Environment.GetEnvironmentVariable("TIBET_LIBRARY")
            ?? Path.Combine(AppContext.BaseDirectory, "..", "libtibet.so"));
        if (!File.Exists(library))
        {
            Fail($"the interposer library is missing: {library} does not exist. Build the install tree with scripts/build.sh.");
            return ExitRefused;
        }

        bool encrypted = true;
        try
        {
            PageEngine.ProbeKernel();
        }
        catch (UserfaultfdUnavailableException e)
        {
            if (options.RequireEncryption)
            {
                Fail($"{e.Message} Refusing to run because of --require-encryption.");
                return ExitRefused;
            }
            Console.Error.WriteLine($"tibet-run: {e.Message} Running {options.Command[0]} unencrypted.");
            encrypted = false;
        }

        if (encrypted && PreloadReach.Obstacle(options.Command[0]) is { } obstacle)
        {
            if (options.RequireEncryption)
            {
                Fail($"{obstacle}. Refusing to run it because of --require-encryption.");
                return ExitRefused;
            }
            Console.Error.WriteLine($"tibet-run: {obstacle}; {options.Command[0]} runs unencrypted. Use a dynamically linked build, or --require-encryption to refuse.");
        }
        if (encrypted && !options.Quiet)
            AnnounceBudget(options);
        if (!CustodianProcess.TryReadSwitch(out bool custodianWanted, out string? custodianProblem))
        {
            Fail(custodianProblem!);
            return ExitRefused;
        }
        if (options.ServeByCustodian && options.ServeChosen && !custodianWanted)
        {
            Fail($"--serve custodian needs the custodian, which {CustodianProcess.SwitchVariable}=0 turns off. Unset it, or use --serve program.");
            return ExitRefused;
        }
        (uint Uid, uint Gid)? account = null;
        if (options.User is { } userName && !OtherUser.TryResolve(userName, library, out account, out string? userProblem))
        {
            Fail(userProblem!);
            return ExitRefused;
        }

        byte[]? handOff = null;
        PublicIdentity? identityPublic = null;
        if (options.IdentityPath != null)
        {
            if (!encrypted)
            {
                Fail($"an identity was given, and sealed models need encrypted RAM, which this machine cannot provide. Refusing to run {options.Command[0]}.");
                return ExitRefused;
            }
            if (!TryPrepareHandOff(options, out handOff, out identityPublic))
                return ExitRefused;
        }

        if (encrypted)
            MemoryLockLimit.RaiseForChild(options.Verbosity);

        HugePagePool? pool = encrypted && options.HugePagesBytes > 0 ? ReserveHugePages(ref options) : null;

        MetricsServer? metrics = null;
        if (options.Metrics is { } endPoint)
        {
            metrics = MetricsServer.TryListen(endPoint, out string? problem);
            if (metrics == null)
            {
                pool?.Dispose();
                Fail($"{problem}. Choose another port; nothing was started.");
                return ExitRefused;
            }
        }

        if (!encrypted && (options.Stats || options.StatsJsonPath != null))
            Console.Error.WriteLine("tibet-run: no statistics: the program runs unencrypted.");

        // The program's environment: this process's, with the interposer and its settings.
        var environment = new Dictionary<string, string?>(StringComparer.Ordinal);
        foreach (System.Collections.DictionaryEntry variable in Environment.GetEnvironmentVariables())
            environment[(string)variable.Key] = (string?)variable.Value;
        if (encrypted)
            ChildEnvironment.Apply(environment, options, library, Environment.ProcessId);

        // The custodian forks off; this process becomes the program (exec semantics: the
        // program keeps tibet-run's pid, signals reach it directly, and its exit status is
        // tibet-run's). The custodian serves forked children's own allocations, hosts
        // --metrics, and gives the hugetlb pool back, all after the program has ended too.
        bool custodianStarted = false;
        // With --identity, the custodian keeps the identity and the program gets a grant
        // (IdentityCustody): the identity's secret never enters the program.
        IdentityDescriptors? identity = null;
        if (handOff != null && !TryPrepareIdentityDescriptors(handOff, identityPublic!, custodianWanted, out identity))
            return ExitRefused;
        // --stats alone: the program also writes its statistics to a file of the run's, so
        // that the custodian can tell whether it printed them (StatisticsWitness).
        string? statsWitnessFile = options.Stats && options.StatsJsonPath == null ? StatisticsWitness.RunFile(Environment.ProcessId) : null;
        if (encrypted && (custodianWanted || metrics != null || pool != null))
        {
            var custodian = CustodianProcess.Start(options, account?.Uid, serveChildren: custodianWanted, metrics, pool?.AddedPages ?? -1,
                identity: identity?.Custodian?.Descriptor ?? -1, statsWitnessFile);
            if (custodian != null && statsWitnessFile != null)
                environment["TIBET_STATS_JSON"] = statsWitnessFile; // the custodian removes it
            if (custodian != null && custodianWanted)
            {
                environment[CustodianProcess.SocketVariable] = custodian;
                // Who the custodian runs as: a process at that name under any other uid
                // (one that took the name after the custodian ended) is not spoken to.
                environment[CustodianProcess.UidVariable] = Libc.geteuid().ToString(System.Globalization.CultureInfo.InvariantCulture);
            }
            custodianStarted = custodian != null;
        }
        if (identity != null && !TryHandIdentityToProgram(identity, handOff!, custodianWanted && custodianStarted, options, environment))
            return ExitRefused;
        if (handOff != null)
            System.Security.Cryptography.CryptographicOperations.ZeroMemory(handOff);
        if (!custodianStarted)
        {
            if (metrics != null)
                Console.Error.WriteLine("tibet-run: --metrics is served by the custodian, which did not start; no metrics.");
            if (pool is { AddedPages: > 0 } grown)
                Console.Error.WriteLine($"tibet-run: the hugetlb pool keeps the {grown.AddedPages} pages added for this run (no custodian to give them back): sysctl -w vm.nr_hugepages=... when done.");
        }
        // metrics: the custodian holds its own copy of the listening socket; this one is
        // close-on-exec (disposing it here could shut the shared socket down).

        if (account is { } target && encrypted)
            OtherUser.OpenUserfaultfdDevice(environment, options.User!);
        if (account is { } user && !OtherUser.TrySwitchTo(options.User!, user, out string? switchProblem))
        {
            Fail(switchProblem!);
            return ExitRefused;
        }
        Console.Out.Flush();
        Console.Error.Flush();
        // The .NET runtime ignores SIGPIPE, and an ignored signal stays ignored across exec:
        // the program gets the default, as from a shell (`tibet-run -- yes | head` ends quietly).
        Libc.signal(Libc.SIGPIPE, Libc.SIG_DFL);
        int errno = Libc.Execute(options.Command, environment);
        // Only on failure: the program did not start.
        Console.Error.WriteLine($"tibet-run: cannot run '{options.Command[0]}': {Libc.Describe(errno)}");
        return errno == Libc.ENOENT ? ExitNotFound : ExitCannotExecute;
    }

    /// <summary>Grows the hugetlb pool for --huge-pages, or says why not and runs without.</summary>
    private static HugePagePool? ReserveHugePages(ref LaunchOptions options)
    {
        long pages = options.HugePagesBytes / (2L << 20);
        try
        {
            return HugePagePool.Reserve(pages);
        }
        catch (InvalidOperationException e)
        {
            Console.Error.WriteLine($"tibet-run: --huge-pages: {e.Message}. Model maps are served in 4 KiB pages.");
            options = options with { HugePagesBytes = 0 };
            return null;
        }
    }

    /// <summary>Loads the identity (asking for its passphrase if it has one) and the claim,
    /// and encodes them as a hand-off (a pinned array the caller wipes).</summary>
    private static bool TryPrepareHandOff(LaunchOptions options, out byte[]? handOff, out PublicIdentity? identity)
    {
        handOff = null;
        identity = null;
        try
        {
            Claim? claim = null;
            if (options.ClaimPath != null && !Claim.TryDecode(ClaimFile.ReadAllBytes(options.ClaimPath), out claim, out _, out string problem))
                return Fail($"'{options.ClaimPath}' is not a claim: {problem}. Check that you named the claim file (tibet claim show FILE).");
            handOff = IdentityHandOff.Prepare(options.IdentityPath!, Tibet.Cli.PassphraseInput.ForOpening(options.IdentityPath!, options.PassphraseFile), claim, out identity);
            if (options.Verbosity > 0)
                Console.Error.WriteLine($"tibet-run: identity {identity.Fingerprint.ToShortString()}" +
                                        (claim == null ? ", no claim" : $", claim {claim.IdHex} ({ClearanceLevelNames.ToName(claim.Clearance)}, expires {claim.Expires:u})"));
            return true;
        }
        catch (Exception e) when (e is IdentityException or Tibet.Cli.CommandLineException or InvalidOperationException)
        {
            return Fail(e.Message);
        }
    }

    /// <summary>The identity's descriptors: the custodian's (its grant token, then the
    /// hand-off), and the program's (the grant; or the hand-off itself, without a custodian).</summary>
    private sealed record IdentityDescriptors(SecretDescriptor Program, SecretDescriptor? Custodian);

    private static bool TryPrepareIdentityDescriptors(byte[] handOff, PublicIdentity identity, bool custodianWanted, out IdentityDescriptors? descriptors)
    {
        descriptors = null;
        byte[]? custodianContents = null, grant = null, token = null;
        SecretDescriptor? custodian = null;
        try
        {
            if (!custodianWanted)
            {
                descriptors = new IdentityDescriptors(SecretDescriptor.Create(handOff), null);
                return true;
            }
            token = CustodianGrant.NewToken();
            custodianContents = GC.AllocateArray<byte>(token.Length + handOff.Length, pinned: true);
            token.CopyTo(custodianContents, 0);
            handOff.CopyTo(custodianContents, token.Length);
            custodian = SecretDescriptor.Create(custodianContents);
            grant = CustodianGrant.Encode(identity, token);
            descriptors = new IdentityDescriptors(SecretDescriptor.Create(grant), custodian);
            custodian = null;
            return true;
        }
        catch (InvalidOperationException e)
        {
            custodian?.Dispose();
            return Fail(e.Message);
        }
        finally
        {
            foreach (byte[]? secret in (byte[]?[])[custodianContents, grant, token])
                if (secret != null)
                    System.Security.Cryptography.CryptographicOperations.ZeroMemory(secret);
        }
    }

    /// <summary>
    /// Gives the program its identity descriptor: the grant when the custodian started with
    /// the identity; else (it did not start) the hand-off itself, said in one line, since
    /// the identity's secret then lives in the program. Closes the custodian's descriptor,
    /// which the program must not inherit.
    /// </summary>
    private static bool TryHandIdentityToProgram(IdentityDescriptors identity, byte[] handOff, bool custodianHoldsIt, LaunchOptions options,
        Dictionary<string, string?> environment)
    {
        identity.Custodian?.Dispose();
        SecretDescriptor program = identity.Program;
        if (identity.Custodian != null && !custodianHoldsIt)
        {
            program.Dispose();
            try
            {
                program = SecretDescriptor.Create(handOff);
            }
            catch (InvalidOperationException e)
            {
                return Fail(e.Message);
            }
            Console.Error.WriteLine("tibet-run: the custodian did not start, so the identity's secret is handed to the program itself (see docs/threat-model.md).");
        }
        ChildEnvironment.ApplyIdentity(environment, options, program.Descriptor);
        return true;
    }

    private static void AnnounceBudget(LaunchOptions options)
    {
        if (options.BudgetBytes == ResidentBudget.Unlimited)
            Console.Error.WriteLine($"tibet-run: --budget unlimited: {ResidentBudget.UnlimitedConsequence}. Give --budget SIZE to seal cold memory (-q silences this line).");
        else if (options.BudgetIsDefault)
            Console.Error.WriteLine($"tibet-run: resident plaintext budget {ResidentBudget.Describe(options.BudgetBytes)} per process, the default; " +
                                    "memory beyond it is sealed. Change it with --budget SIZE (-q silences this line).");
    }

    private static bool Fail(string message)
    {
        Console.Error.WriteLine($"tibet-run: {message}");
        return false;
    }
}
