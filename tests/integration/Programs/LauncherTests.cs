using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Programs;

/// <summary>tibet-run behaves like a shell about exit codes, and refuses bad input clearly.</summary>
public class LauncherTests
{
    [Theory]
    [InlineData("exit 7", 7)]
    [InlineData("kill -TERM $$", 128 + 15)]
    [InlineData("kill -KILL $$", 128 + 9)]
    public void Exit_status_is_the_programs(string script, int expected)
    {
        var result = TibetRun.Run(TibetRun.Launcher, ["--", "/bin/sh", "-c", script]);
        Assert.True(result.ExitCode == expected, result.ToString());
    }

    [Fact]
    public void A_missing_command_exits_127_with_its_name()
    {
        var result = TibetRun.Run(TibetRun.Launcher, ["--", "/nonexistent/program"]);
        Assert.Equal(127, result.ExitCode);
        Assert.Contains("/nonexistent/program", result.Stderr);
    }

    [Theory]
    [InlineData("--budget", "12Q", "--budget '12Q'")]
    [InlineData("--threshold", "1K", "--threshold '1K'")]
    [InlineData("--compression", "lz4", "--compression 'lz4'")]
    [InlineData("--eviction", "lru", "--eviction 'lru'")]
    [InlineData("--cipher", "chacha20", "--cipher 'chacha20'")]
    [InlineData("--huge-pages", "1M", "--huge-pages '1M'")]
    // Past decimal's range once multiplied: refused, never an overflow exception.
    [InlineData("--budget", "70000000000000000000000000000T", "--budget '70000000000000000000000000000T'")]
    [InlineData("--budget", "9223372036854775807K", "--budget '9223372036854775807K'")]
    public void A_bad_option_exits_2_naming_the_value(string option, string value, string expected)
    {
        var result = TibetRun.Run(TibetRun.Launcher, [option, value, "--", "/bin/true"]);
        Assert.Equal(2, result.ExitCode);
        Assert.Contains(expected, result.Stderr);
    }

    [Fact]
    public void A_missing_library_exits_2_and_says_where_it_looked()
    {
        var result = TibetRun.Run(TibetRun.Launcher, ["--library", "/nonexistent/libtibet.so", "--", "/bin/true"]);
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("/nonexistent/libtibet.so", result.Stderr);
        Assert.Contains("scripts/build.sh", result.Stderr);
    }

    [Theory]
    [InlineData(null, "scan-resistant")]
    [InlineData("fifo", "fifo")]
    public void The_eviction_policy_reaches_the_engine(string? option, string expected)
    {
        string[] options = option == null ? ["--budget", "1M", "--threshold", "64K"] : ["--eviction", option, "--budget", "1M", "--threshold", "64K"];
        var result = TibetRun.Encrypted(options, ["/usr/bin/python3", "-c", "b = bytearray(8 << 20); b[::4096] = b'x' * 2048; print(sum(b))"]);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.True(result.Stats is { } stats && stats.GetProperty("evictionPolicy").GetString() == expected, result.ToString());
        Assert.True(result.Stat("evictions") > 0, result.ToString());
    }

    /// <summary>--cipher reaches the engine: the statistics name it, and the sealed bytes
    /// carry its tag (16 bytes for AES-256-GCM, 32 for AEGIS-256) on every page.</summary>
    [Theory]
    [InlineData(null, "aes-256-gcm", 16)]
    [InlineData("aegis-256", "aegis-256", 32)]
    public void The_cipher_reaches_the_engine(string? option, string expected, int tagSize)
    {
        string[] options = option == null ? ["--budget", "1M", "--threshold", "64K"] : ["--cipher", option, "--budget", "1M", "--threshold", "64K"];
        // Random bytes: nothing is a zero page, so every sealed page holds 4096 + tag bytes.
        var result = TibetRun.Encrypted(options, ["/usr/bin/python3", "-c",
            "import os, hashlib; b = bytearray(os.urandom(8 << 20)); h = hashlib.sha256(b).hexdigest(); print(hashlib.sha256(b).hexdigest() == h)"]);
        Assert.True(result.ExitCode == 0 && result.Stdout.Trim() == "True", result.ToString());
        Assert.True(result.Stats is { } stats && stats.GetProperty("cipher").GetString() == expected, result.ToString());
        Assert.True(result.Stat("evictions") > 0 && result.Stat("decrypts") > 0, result.ToString());
        Assert.True(result.Stat("sealedPages") > 0, result.ToString());
        // The store holds the sealed pages and the copies kept by resident clean pages.
        Assert.Equal((result.Stat("sealedPages") + result.Stat("cleanCopies")) * (4096 + tagSize), result.Stat("sealedBytes"));
    }

    [Fact]
    public void Statistics_come_back_from_the_program()
    {
        var result = TibetRun.Encrypted(["--budget", "1M", "--threshold", "64K"], ["/usr/bin/python3", "-c", "b = bytearray(8 << 20); b[::4096] = b'x' * 2048; print(sum(b))"]);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("245760", result.Stdout.Trim());
        Assert.True(result.Stat("faults") > 0, result.ToString());
        Assert.Equal(1 << 20, result.Stat("residentBudgetBytes"));
    }

    [Theory]
    [InlineData("TIBET_BUDGET", "lots")]
    [InlineData("TIBET_CIPHER", "rot13")]
    [InlineData("TIBET_COLLAPSE", "2")]
    [InlineData("TIBET_TRACK_WRITES", "yes")]
    [InlineData("TIBET_CHILD_EVICTION", "on")]
    public void A_malformed_variable_stops_the_program_before_main(string name, string value)
    {
        var result = TibetRun.Run("/usr/bin/env", ["LD_PRELOAD=" + Path.Combine(RepoPaths.Root, "out", "lib", "libtibet.so"), $"{name}={value}", "/bin/echo", "ran"]);
        Assert.Equal(2, result.ExitCode);
        Assert.DoesNotContain("ran", result.Stdout);
        Assert.Contains($"{name}='{value}'", result.Stderr);
    }

    /// <summary>
    /// tibet-run executes the program: it keeps tibet-run's pid, so a supervisor that
    /// waits for the pid it spawned (Redis's test suite, systemd's PIDFile=) finds the
    /// program, and a signal sent to that pid reaches the program itself, whose exit
    /// status is tibet-run's. (Before, the program was tibet-run's child.)
    /// </summary>
    [Fact]
    public void The_program_keeps_tibet_runs_pid_and_receives_its_signals()
    {
        // The shell waits in read (stdin stays open and empty): no fork, only the signal.
        var start = new System.Diagnostics.ProcessStartInfo(TibetRun.Launcher) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        foreach (string a in (string[])["-q", "--", "/bin/sh", "-c", "trap 'exit 3' TERM; echo $$; read line; exit 9"])
            start.ArgumentList.Add(a);
        using var launcher = System.Diagnostics.Process.Start(start)!;
        string? first = launcher.StandardOutput.ReadLine();
        Assert.Equal($"{launcher.Id}", first?.Trim());
        Assert.Equal("sh", File.ReadAllText($"/proc/{launcher.Id}/comm").Trim());
        Assert.Equal(0, Tibet.Core.Interop.Libc.kill(launcher.Id, 15));
        Assert.True(launcher.WaitForExit(TimeSpan.FromSeconds(30)), "the program did not end on SIGTERM");
        string stderr = launcher.StandardError.ReadToEnd(); // tibet-run writes nothing here with -q
        Assert.True(launcher.ExitCode == 3, $"exit {launcher.ExitCode}\n{stderr}");
    }

    /// <summary>A program tibet-run executes starts with SIGPIPE at its default, as from a
    /// shell (the .NET runtime ignores it, and an ignored signal survives exec): `yes` whose
    /// reader went away ends by SIGPIPE (status 141), quietly.</summary>
    [Fact]
    public void The_program_starts_with_SIGPIPE_at_its_default()
    {
        string bash = TibetRun.Require("bash", "bash");
        var run = TibetRun.Run(bash, ["-c", "\"$0\" -q -- yes | head -n 1 >/dev/null; echo ${PIPESTATUS[0]}", TibetRun.Launcher]);
        Assert.True(run.Stdout.Trim() == "141", run.ToString());
        Assert.DoesNotContain("Broken pipe", run.Stderr);
    }

    /// <summary>TIBET_CUSTODIAN is tibet-run's: anything but 0 or 1 stops it before
    /// anything runs. A program preloaded by hand with a TIBET_CUSTODIAN_SOCKET that is no
    /// custodian's name runs, says so, and its forked children say theirs are not encrypted.</summary>
    [Fact]
    public void A_malformed_custodian_setting_stops_tibet_run_and_a_false_descriptor_is_said()
    {
        var result = TibetRun.Run(TibetRun.Launcher, ["-q", "--", "/bin/echo", "ran"], environment: new Dictionary<string, string?> { ["TIBET_CUSTODIAN"] = "maybe" });
        Assert.Equal(2, result.ExitCode);
        Assert.DoesNotContain("ran", result.Stdout);
        Assert.Contains("TIBET_CUSTODIAN='maybe' must be 0", result.Stderr);

        string program = NativeBuild.Compile("prog_child_alloc.c");
        var preloaded = TibetRun.Run("/usr/bin/env", ["LD_PRELOAD=" + Path.Combine(RepoPaths.Root, "out", "lib", "libtibet.so"),
            "TIBET_CUSTODIAN_SOCKET=../Not A Name", "TIBET_THRESHOLD=64K", program]);
        Assert.True(preloaded.ExitCode == 0 && preloaded.Stdout.Contains("child_alloc: OK"), preloaded.ToString());
        Assert.Contains("TIBET_CUSTODIAN_SOCKET is not a custodian's name", preloaded.Stderr);
        Assert.Contains("this tree has no custodian", preloaded.Stderr);
    }

    /// <summary>A program preloaded by hand takes the sizes tibet-run takes, and a size past
    /// any range stops it before main with the variable named, not an exception.</summary>
    [Theory]
    [InlineData("16M", true)]
    [InlineData("1.5G", true)]
    [InlineData("70000000000000000000000000000T", false)]
    [InlineData("-1", false)]
    public void The_interposer_alone_takes_sizes_with_suffixes_and_refuses_hostile_ones(string budget, bool accepted)
    {
        string stats = Path.Combine(Path.GetTempPath(), $"tibet-size-{Guid.NewGuid():N}.json");
        try
        {
            var result = TibetRun.Run("/usr/bin/env", ["LD_PRELOAD=" + Path.Combine(RepoPaths.Root, "out", "lib", "libtibet.so"),
                "TIBET_BUDGET=" + budget, "TIBET_STATS_JSON=" + stats, "/bin/echo", "ran"]);
            if (accepted)
            {
                Assert.True(result.ExitCode == 0 && result.Stdout.Trim() == "ran", result.ToString());
                Assert.True(Tibet.Core.Policy.SizeParser.TryParse(budget, out long bytes));
                using var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(stats));
                Assert.Equal(bytes, json.RootElement.GetProperty("residentBudgetBytes").GetInt64());
            }
            else
            {
                Assert.Equal(2, result.ExitCode);
                Assert.DoesNotContain("ran", result.Stdout);
                Assert.Contains($"TIBET_BUDGET='{budget}'", result.Stderr);
                Assert.DoesNotContain("Exception", result.Stderr);
            }
        }
        finally
        {
            File.Delete(stats);
        }
    }

    /// <summary>Programs the command executes run on encrypted RAM too, unless
    /// --no-inherit; either way they compute the same results.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Executed_programs_inherit_tibet_unless_told_not_to(bool noInherit)
    {
        string python = TibetRun.Require("python3", "python3");
        string script = "import hashlib; m = open('/proc/self/maps').read(); b = bytearray(16 << 20); b[::4096] = b'y' * 4096; " +
                        "print('libtibet.so' in m, hashlib.sha256(b).hexdigest())";
        // The shell is the command; python is a program it executes.
        string[] command = ["/bin/sh", "-c", $"{python} -c \"{script}\"; echo shell-done"];
        var native = TibetRun.Native(command);
        string[] options = noInherit ? ["--threshold", "64K", "--budget", "4M", "--no-inherit"] : ["--threshold", "64K", "--budget", "4M"];
        var encrypted = TibetRun.Run(TibetRun.Launcher, [.. options, "--", .. command]);
        Assert.True(encrypted.ExitCode == 0, encrypted.ToString());
        string nativeHash = native.Stdout.Split(' ', '\n')[1];
        Assert.Equal($"{(noInherit ? "False" : "True")} {nativeHash}\nshell-done", encrypted.Stdout.Trim());
    }
}
