using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Abi;

/// <summary>What a C program compiled against the real headers prints as "name value"
/// lines, and the comparison of our declarations with it.</summary>
internal static class HeaderValues
{
    public static Dictionary<string, ulong> Compile(string source, params string[] gccArguments)
    {
        string program = NativeBuild.Compile(source, gccArguments);
        var (code, stdout, stderr) = NativeBuild.Run(program, []);
        Assert.True(code == 0, stderr);
        return stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(line => line.Split(' '))
            .ToDictionary(p => p[0], p => ulong.Parse(p[1]));
    }

    /// <summary>Every name is declared on both sides, with the same value.</summary>
    public static void AssertSame(Dictionary<string, ulong> fromHeader, Dictionary<string, ulong> ours)
    {
        Assert.Equal(fromHeader.Keys.Order(), ours.Keys.Order());
        var mismatches = ours.Where(kv => fromHeader[kv.Key] != kv.Value)
            .Select(kv => $"{kv.Key}: header {fromHeader[kv.Key]}, ours {kv.Value}").ToList();
        Assert.True(mismatches.Count == 0, string.Join("\n", mismatches));
    }
}
