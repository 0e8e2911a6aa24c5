using System.Runtime.InteropServices;
using Tibet.Core.Files;
using Tibet.Core.Gguf;
using Tibet.Core.Identity;
using Tibet.Core.Interop;
using Tibet.Core.Paging;
using Tibet.Core.Sealing;

namespace Tibet.EngineChild;

/// <summary>
/// Drives every part of the fault path while the LD_PRELOAD probe counts malloc calls
/// on the handler thread: faults, read-ahead, eviction, compression and madvise; pages
/// from a plain file (FileSource) and from a sealed model (SealedFileSource); forked
/// children served from the snapshot, from the store and from a source; and tampering
/// (a sealed page of the store, and a page of a sealed file), in this process and in a
/// child. A control thread that mallocs on purpose proves the probe is really counting.
/// </summary>
internal static unsafe class MallocProbe
{
    private const int SigBus = 7;
    private const int PageSize = 4096;

    private static delegate* unmanaged<byte*, int> _readSigbus;
    private static delegate* unmanaged<byte*, byte*, nuint, int> _forkCompare;
    private static delegate* unmanaged<byte*, int> _forkRead;
    private static delegate* unmanaged<int, int> _wait;

    private static readonly Lock Gate = new();
    private static readonly HashSet<string> ReportThreads = [];
    private static int _authenticationReports, _tamperCallbacks;

    public static int Run()
    {
        string probePath = Environment.GetEnvironmentVariable("TIBET_MALLOC_PROBE")
            ?? throw new InvalidOperationException("TIBET_MALLOC_PROBE must name the probe library");
        nint probe = NativeLibrary.Load(probePath);
        var arm = (delegate* unmanaged<void>)NativeLibrary.GetExport(probe, "tibet_probe_arm");
        var count = (delegate* unmanaged<int, long>)NativeLibrary.GetExport(probe, "tibet_probe_count");
        _readSigbus = (delegate* unmanaged<byte*, int>)NativeLibrary.GetExport(probe, "tibet_probe_read_sigbus");
        _forkCompare = (delegate* unmanaged<byte*, byte*, nuint, int>)NativeLibrary.GetExport(probe, "tibet_probe_fork_compare");
        _forkRead = (delegate* unmanaged<byte*, int>)NativeLibrary.GetExport(probe, "tibet_probe_fork_read");
        _wait = (delegate* unmanaged<int, int>)NativeLibrary.GetExport(probe, "tibet_probe_wait");

        string directory = Directory.CreateTempSubdirectory("tibet-probe-").FullName;
        try
        {
            using var files = ProbeFiles.Create(directory);
            const int pages = 8192;
            // As the interposer and the custodian read it: a handler per CPU, the service
            // passed between them as the faulting thread moves.
            bool handlerPerCpu = Environment.GetEnvironmentVariable("TIBET_HANDLER_PER_CPU") == "1";
            // Two CPUs, and this thread moved between them while armed, so that the service
            // passes from handler to handler, on a machine of any size.
            int[] cpus = handlerPerCpu ? HoldToTwoCpus() : [];
            using var engine = PageEngine.Create(new EngineOptions
            {
                HandlerPerCpu = handlerPerCpu,
                ResidentBudgetBytes = 512 * 4096,
                Compression = CompressionMode.Auto,
                ServeForkedChildren = true,
                OnAuthenticationFailure = _ => NoteReport(ref _authenticationReports),
            });
            if (!engine.Features.EventFork)
                throw new InvalidOperationException("this kernel has no UFFD_FEATURE_EVENT_FORK; forked children cannot be probed");
            using var arena = engine.CreateArena(pages * 4096L, "probe");
            // A second engine, with a budget that has room for whole 2 MiB ranges: a model
            // map's ranges are placed whole and read ahead (FaultService's RangePlacer and
            // its reader thread) where the kernel gives transparent huge pages.
            using var roomy = PageEngine.Create(new EngineOptions { ResidentBudgetBytes = 64L << 20, HandlerPerCpu = handlerPerCpu });
            // A third, whose budget holds four ranges of the 12 MiB map: read through three
            // times, its ranges are evicted whole and come back whole from their sealed
            // copies, decrypted by the handler and the fill worker into recycled huge pages.
            using var tight = PageEngine.Create(new EngineOptions { ResidentBudgetBytes = 8L << 20, HandlerPerCpu = handlerPerCpu });
            // Every engine made while this thread may use both CPUs (each has a handler on
            // each), then warmed up on the serving handler's CPU: the first hand-over of each
            // engine comes while armed, as it may come long after start-up in use.
            if (handlerPerCpu)
                MoveTo(engine.ServingHandlerCpu);
            var random = new byte[4096];
            var text = System.Text.Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("compressible text 0123456789 ", 200)))[..4096];
            var scratch = new byte[4096];
            new Random(3).NextBytes(random);

            // One pass of everything before arming, so that every path has been compiled
            // once: CoreCLR's JIT mallocs while it compiles (the parent disables tiered
            // compilation, so nothing is compiled again later). NativeAOT, which the
            // interposer uses, has no JIT.
            for (int i = 0; i < 2048; i++) ArenaMemory.Write(arena.Address + i * 4096, i % 3 == 0 ? text : random);
            arena.Evict();
            for (int i = 0; i < 2048; i += 5) ArenaMemory.Read(arena.Address + i * 4096, scratch);
            Libc.madvise(arena.Address, 64 * 4096, Libc.MADV_DONTNEED);
            for (int i = 0; i < 64; i++) ArenaMemory.Read(arena.Address + i * 4096, scratch);
            for (int i = 4096; i < 5120; i++) ArenaMemory.Write(arena.Address + i * 4096, random);
            arena.Evict();
            for (int i = 4096; i < 5120; i++) ArenaMemory.Read(arena.Address + i * 4096, scratch);
            var warm = Exercise(engine, files);
            if (handlerPerCpu)
                MoveTo(roomy.ServingHandlerCpu);
            warm = warm.Failure == null ? PlaceRanges(roomy, files, warm) : warm;
            if (handlerPerCpu)
                MoveTo(tight.ServingHandlerCpu);
            warm = warm.Failure == null ? PlaceRanges(tight, files, warm, passes: 3) : warm;
            if (warm.Failure is { } warmFailure)
            {
                Console.WriteLine("warm-up failed: " + warmFailure);
                return 4;
            }

            long Handovers() => engine.GetStats().HandlerHandovers + roomy.GetStats().HandlerHandovers + tight.GetStats().HandlerHandovers;
            long handoversBefore = Handovers();
            int gcBefore = GC.CollectionCount(0);
            arm();
            var control = new Thread(() =>
            {
                for (int i = 0; i < 10; i++) Marshal.FreeHGlobal(Marshal.AllocHGlobal(64));
            }) { Name = "probe-control" };
            control.Start();
            control.Join();

            for (int round = 0; round < 2; round++)
            {
                if (handlerPerCpu)
                    MoveTo(Other(cpus, engine.ServingHandlerCpu));
                for (int i = 0; i < pages; i++)
                    ArenaMemory.Write(arena.Address + i * 4096, i % 3 == 0 ? text : random);
                for (int i = 0; i < pages; i += 7)
                    ArenaMemory.Read(arena.Address + i * 4096, scratch);
                arena.Evict();
                for (int i = pages - 1; i >= 0; i -= 3)
                    ArenaMemory.Read(arena.Address + i * 4096, scratch);
                // Incompressible pages read forwards, page by page: read-ahead runs long
                // enough to share with the fill worker.
                for (int i = 4096; i < 5120; i++)
                    ArenaMemory.Write(arena.Address + i * 4096, random);
                arena.Evict();
                for (int i = 4096; i < 5120; i++)
                    ArenaMemory.Read(arena.Address + i * 4096, scratch);
                // A REMOVE event, served by the handler.
                Libc.madvise(arena.Address + 100 * 4096, 64 * 4096, Libc.MADV_DONTNEED);
            }
            // The pages read back last were not written since: evicted by their kept copies
            // (the second round's writes to read-back pages were write-protect faults).
            arena.Evict();
            var armed = Exercise(engine, files);
            if (handlerPerCpu)
                MoveTo(Other(cpus, roomy.ServingHandlerCpu));
            armed = armed.Failure == null ? PlaceRanges(roomy, files, armed) : armed;
            if (handlerPerCpu)
                MoveTo(Other(cpus, tight.ServingHandlerCpu));
            armed = armed.Failure == null ? PlaceRanges(tight, files, armed, passes: 3) : armed;
            // The reports of the last tampered page are delivered before its SIGBUS, so
            // by now every callback has run; give the reporter's bookkeeping a moment.
            Thread.Sleep(100);
            long handlerMallocs = count(0), controlMallocs = count(1), reporterMallocs = count(2);
            if (handlerMallocs > 0)
                ((delegate* unmanaged<void>)NativeLibrary.GetExport(probe, "tibet_probe_report"))();

            var stats = engine.GetStats();
            Console.WriteLine($"gcs-while-armed {GC.CollectionCount(0) - gcBefore} handler-allocated {engine.GetStats().HandlerAllocatedBytes}");
            Console.WriteLine($"handler-mallocs {handlerMallocs} control-mallocs {controlMallocs} reporter-mallocs {reporterMallocs}");
            Console.WriteLine($"faults {stats.Faults} evictions {stats.Evictions} decrypts {stats.Decrypts} " +
                              $"decompressions {stats.Decompressions} removes {stats.RemoveEvents}");
            Console.WriteLine($"clean-evictions {stats.CleanEvictions} write-faults {stats.WriteFaults} worker-decrypts {stats.WorkerDecrypts}");
            Console.WriteLine($"sourced {stats.SourcedPages} authentication-failures {stats.AuthenticationFailures} " +
                              $"peak-children {stats.PeakForkedChildren}");
            Console.WriteLine($"handlers-per-cpu {handlerPerCpu} handovers-before-arming {handoversBefore} handovers {Handovers() - handoversBefore}");
            var roomyStats = roomy.GetStats();
            Console.WriteLine($"placed {roomyStats.PlacedRanges} placed-read-ahead {roomyStats.PlacedReadAhead}");
            var tightStats = tight.GetStats();
            Console.WriteLine($"range-evictions {tightStats.RangeEvictions} placed-sealed {tightStats.PlacedSealedRanges} recycled {tightStats.RecycledRanges}");
            Console.WriteLine($"exercise {(armed.Failure ?? "ok")} children-served {armed.ChildrenServed} " +
                              $"children-killed {armed.ChildrenKilled} parent-sigbus {armed.ParentSigbus}");
            lock (Gate)
                Console.WriteLine($"reports {_authenticationReports} tamper-callbacks {_tamperCallbacks} " +
                                  $"report-threads {string.Join(',', ReportThreads.Order())}");
            return 0;
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    /// <summary>Holds this thread (and so the engines it creates: their handlers go to the
    /// CPUs their creator may use) to the first two CPUs it may run on.</summary>
    private static int[] HoldToTwoCpus()
    {
        ulong* mask = stackalloc ulong[16];
        if (Libc.sched_getaffinity(0, 16 * sizeof(ulong), mask) != 0)
            throw new InvalidOperationException("sched_getaffinity failed");
        var cpus = new List<int>();
        for (int cpu = 0; cpu < 16 * 64 && cpus.Count < 2; cpu++)
            if ((mask[cpu / 64] & (1UL << (cpu % 64))) != 0)
                cpus.Add(cpu);
        if (cpus.Count < 2)
            throw new InvalidOperationException("a handler per CPU needs two CPUs to pass the service between; this process may run on one (taskset, cgroups, or a one-CPU machine)");
        if (!Tibet.Core.Threading.ServiceCpus.HoldThread(0, [.. cpus]))
            throw new InvalidOperationException($"cannot hold this thread to CPUs {cpus[0]},{cpus[1]}");
        return [.. cpus];
    }

    private static int Other(int[] cpus, int cpu) => cpus[0] == cpu ? cpus[1] : cpus[0];

    /// <summary>Moves this thread to <paramref name="cpu"/>: its next faults are taken there.</summary>
    private static void MoveTo(int cpu)
    {
        if (!Tibet.Core.Threading.ServiceCpus.PinThread(0, cpu))
            throw new InvalidOperationException($"cannot move this thread to CPU {cpu}");
        Thread.Sleep(6); // past the least time between two hand-overs
    }

    private static void NoteReport(ref int counter)
    {
        lock (Gate)
        {
            counter++;
            ReportThreads.Add(Thread.CurrentThread.Name ?? "(unnamed)");
        }
    }

    private sealed record Outcome(string? Failure, int ChildrenServed, int ChildrenKilled, int ParentSigbus);

    /// <summary>
    /// The page-source, fork and tamper paths, each on fresh arenas so that every page
    /// is really faulted: pages of a plain file and of a sealed model; children that read
    /// evicted pages and untouched file pages; tampered pages read by this process (the
    /// probe catches the SIGBUS) and by children (which die of it).
    /// </summary>
    private static Outcome Exercise(PageEngine engine, ProbeFiles files)
    {
        int served = 0, killed = 0, caught = 0;

        // A plain file, read on first touch.
        using var fileArena = engine.CreateArena(files.PlainBytes.Length, "probe file");
        fileArena.AttachSource(FileSource.Open(files.PlainFd, 0));
        if (!ArenaMemory.SequenceEqual(fileArena.Address, files.PlainBytes))
            return new Outcome("the file arena differs from the file", served, killed, caught);

        // A sealed model, decrypted on first touch.
        using var sealedArena = engine.CreateArena(files.SealedView.Length, "probe sealed");
        sealedArena.AttachSource(files.SealedSource(files.SealedFd));
        if (!ArenaMemory.SequenceEqual(sealedArena.Address, files.SealedView))
            return new Outcome("the sealed arena differs from the view", served, killed, caught);

        // A tampered page of a sealed model, read here: SIGBUS, reported off the handler.
        using var tampered = engine.CreateArena(files.SealedView.Length, "probe tampered");
        tampered.AttachSource(files.SealedSource(files.TamperedFd));
        caught += _readSigbus((byte*)tampered.Address + files.TamperedPage * PageSize);

        // Evicted pages of the store, read by a child.
        var expected = new byte[64 * PageSize];
        new Random(9).NextBytes(expected);
        using var storeArena = engine.CreateArena(expected.Length, "probe store");
        ArenaMemory.Write(storeArena.Address, expected);
        storeArena.Evict();
        fixed (byte* e = expected)
            served += ChildExitedCleanly(engine, _forkCompare((byte*)storeArena.Address, e, (nuint)expected.Length)) ? 1 : 0;

        // Untouched pages of a file, read by a child from the source.
        using var childFileArena = engine.CreateArena(files.PlainBytes.Length, "probe child file");
        childFileArena.AttachSource(FileSource.Open(files.PlainFd, 0));
        fixed (byte* e = files.PlainBytes)
            served += ChildExitedCleanly(engine, _forkCompare((byte*)childFileArena.Address, e, (nuint)files.PlainBytes.Length)) ? 1 : 0;

        // A tampered page of a sealed model, read by a child.
        using var childTampered = engine.CreateArena(files.SealedView.Length, "probe child tampered");
        childTampered.AttachSource(files.SealedSource(files.TamperedFd));
        killed += ChildDiedOfSigbus(engine, _forkRead((byte*)childTampered.Address + files.TamperedPage * PageSize)) ? 1 : 0;

        // A sealed page of the store whose ciphertext was altered: read by a child, then here.
        if (!engine.TryLocateCiphertext(storeArena, 5, out nint slot, out int length))
            return new Outcome("page 5 of the store arena is not sealed", served, killed, caught);
        ((byte*)slot)[length / 2] ^= 0x01;
        killed += ChildDiedOfSigbus(engine, _forkRead((byte*)storeArena.Address + 5 * PageSize)) ? 1 : 0;
        caught += _readSigbus((byte*)storeArena.Address + 5 * PageSize);

        string? failure = served == 2 && killed == 2 && caught == 2 ? null
            : $"children served {served} of 2, children killed by SIGBUS {killed} of 2, SIGBUS caught here {caught} of 2";
        return new Outcome(failure, served, killed, caught);
    }

    /// <summary>A model map of <see cref="ProbeFiles.BigPlainBytes"/> read through in order,
    /// as a model's first token would: its whole ranges are placed, the next read ahead.</summary>
    private static Outcome PlaceRanges(PageEngine engine, ProbeFiles files, Outcome sofar, int passes = 1)
    {
        using var arena = engine.CreateArena(files.BigPlainBytes.Length, "probe placed");
        arena.AttachSource(FileSource.Open(files.BigPlainFd, 0));
        var page = new byte[PageSize];
        for (int pass = 0; pass < passes; pass++)
            for (int i = 0; i * PageSize < files.BigPlainBytes.Length; i++)
            {
                ArenaMemory.Read(arena.Address + i * PageSize, page);
                if (!page.AsSpan().SequenceEqual(files.BigPlainBytes.AsSpan(i * PageSize, PageSize)))
                    return sofar with { Failure = $"page {i} of the placed map differs from the file (pass {pass})" };
            }
        return sofar;
    }

    private static bool ChildExitedCleanly(PageEngine engine, int pid)
    {
        engine.ChildForked(pid);
        int status = _wait(pid);
        return (status & 0x7f) == 0 && ((status >> 8) & 0xff) == 0;
    }

    private static bool ChildDiedOfSigbus(PageEngine engine, int pid)
    {
        engine.ChildForked(pid);
        int status = _wait(pid);
        return (status & 0x7f) == SigBus;
    }

    /// <summary>A plain file, a sealed model with a live key, and a copy of the model with one
    /// data page altered.</summary>
    private sealed class ProbeFiles : IDisposable
    {
        private readonly List<FileStream> _open = [];
        private SealedModel? _model;
        private AccessDecision? _decision;
        private SealedFileView? _view;

        public byte[] PlainBytes { get; private set; } = [];
        public int PlainFd { get; private set; }

        /// <summary>A plain file of 12 MiB: several whole 2 MiB ranges wherever its map lands.</summary>
        public byte[] BigPlainBytes { get; private set; } = [];
        public int BigPlainFd { get; private set; }
        public int SealedFd { get; private set; }
        public int TamperedFd { get; private set; }
        public long TamperedPage { get; private set; }

        /// <summary>What the program may see of the sealed model (decrypted data pages).</summary>
        public byte[] SealedView { get; private set; } = [];

        public SealedFileSource SealedSource(int fd) =>
            new(_view!, fd, 0, onTampered: () => NoteReport(ref _tamperCallbacks));

        public static ProbeFiles Create(string directory)
        {
            var files = new ProbeFiles();
            files.PlainBytes = new byte[256 * PageSize + 1000]; // a partial last page
            new Random(11).NextBytes(files.PlainBytes);
            string plainPath = Path.Combine(directory, "plain.bin");
            File.WriteAllBytes(plainPath, files.PlainBytes);
            files.PlainFd = files.OpenFd(plainPath);
            files.BigPlainBytes = new byte[12 << 20];
            new Random(13).NextBytes(files.BigPlainBytes);
            string bigPath = Path.Combine(directory, "big.bin");
            File.WriteAllBytes(bigPath, files.BigPlainBytes);
            files.BigPlainFd = files.OpenFd(bigPath);

            string modelPath = Path.Combine(directory, "model.gguf");
            var writer = new GgufWriter();
            writer.Add("general.architecture", "llama");
            writer.Add("general.name", "malloc probe model");
            var tensor = writer.AddTensor("token_embd.weight", GgmlType.F32, 64, 2048); // 512 KiB
            var data = new byte[tensor.ByteSize];
            new Random(12).NextBytes(data);
            using (var output = new FileStream(modelPath, FileMode.CreateNew, FileAccess.Write))
            {
                writer.WriteHeader(output);
                writer.WriteTensorData(output, tensor, data);
            }

            using var recipient = Identity.Generate();
            using var issuer = Identity.Generate();
            string sealedPath = Path.Combine(directory, "model.sealed.gguf");
            ModelSealer.Seal(modelPath, sealedPath, [recipient.Public], ClearanceLevel.Secret, [issuer.Public]);
            var now = DateTimeOffset.UtcNow;
            var claim = Claim.Issue(issuer, recipient.Public, ClearanceLevel.Secret, now.AddDays(-1), now.AddDays(1));
            files._model = SealedModel.Open(sealedPath);
            files._decision = files._model.Decide(recipient, claim, now);
            if (!files._decision.IsLive)
                throw new InvalidOperationException("the probe's sealed model did not open: " + files._decision);
            files._view = SealedFileView.For(files._model, files._decision.Key);
            files.SealedFd = files.OpenFd(sealedPath);
            long sealedLength = new FileInfo(sealedPath).Length;
            files.SealedView = new byte[sealedLength];
            fixed (byte* v = files.SealedView)
                if (files._view.Read(files.SealedFd, 0, v, sealedLength) != sealedLength)
                    throw new InvalidOperationException("the sealed model could not be read through its view");

            // One byte of the third data page altered.
            string tamperedPath = Path.Combine(directory, "model.tampered.gguf");
            byte[] bytes = File.ReadAllBytes(sealedPath);
            files.TamperedPage = files._model.DataOffset / PageSize + 2;
            bytes[files.TamperedPage * PageSize + 100] ^= 0x01;
            File.WriteAllBytes(tamperedPath, bytes);
            files.TamperedFd = files.OpenFd(tamperedPath);
            return files;
        }

        private int OpenFd(string path)
        {
            var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0);
            _open.Add(stream);
            return (int)stream.SafeFileHandle.DangerousGetHandle();
        }

        public void Dispose()
        {
            foreach (var stream in _open) stream.Dispose();
            _view?.Dispose();
            _decision?.Dispose();
            _model?.Dispose();
        }
    }
}
