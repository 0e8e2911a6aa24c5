using System.Runtime.InteropServices;
using Tibet.Core.Interop;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Abi;

/// <summary>
/// The libc struct and constants that Libc re-declares for the GGUF map path equal what
/// gcc reads from glibc's headers.
/// </summary>
public class LibcAbiTests
{
    [Fact]
    public void Declarations_match_the_glibc_headers()
    {
        string program = NativeBuild.Compile("libc_abi.c");
        var (code, stdout, stderr) = NativeBuild.Run(program, []);
        Assert.True(code == 0, stderr);
        var fromHeader = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(line => line.Split(' '))
            .ToDictionary(p => p[0], p => ulong.Parse(p[1]));

        var ours = new Dictionary<string, ulong>
        {
            ["sizeof_stat"] = (ulong)Marshal.SizeOf<Libc.Stat>(),
            ["offsetof_stat.st_mode"] = (ulong)Marshal.OffsetOf<Libc.Stat>(nameof(Libc.Stat.st_mode)),
            ["offsetof_stat.st_size"] = (ulong)Marshal.OffsetOf<Libc.Stat>(nameof(Libc.Stat.st_size)),
            ["O_RDONLY"] = Libc.O_RDONLY,
            ["O_DIRECT"] = Libc.O_DIRECT,
            ["O_CLOEXEC"] = Libc.O_CLOEXEC,
            ["S_IFMT"] = Libc.S_IFMT,
            ["S_IFREG"] = Libc.S_IFREG,
            ["POSIX_FADV_DONTNEED"] = Libc.POSIX_FADV_DONTNEED,
        };

        Assert.Equal(fromHeader.Keys.Order(), ours.Keys.Order());
        var mismatches = ours.Where(kv => fromHeader[kv.Key] != kv.Value)
            .Select(kv => $"{kv.Key}: header {fromHeader[kv.Key]}, ours {kv.Value}").ToList();
        Assert.True(mismatches.Count == 0, string.Join("\n", mismatches));
    }
}
