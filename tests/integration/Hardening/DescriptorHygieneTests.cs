using System.Text.RegularExpressions;
using Tibet.Core.Interop;
using Tibet.IntegrationTests.Sealing;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Hardening;

/// <summary>
/// tibet's own descriptors stay out of the program's way: a real program
/// (native/prog_fd_list.c) lists its descriptors, and those a child it executes finds
/// open, natively and under tibet-run. Below the floor (1000, see HighDescriptors) the
/// lists must be identical, and the executed child (not interposed: it gets an empty
/// environment) must inherit nothing of tibet's. CPython's test_subprocess failed on
/// exactly this: tibet's descriptors sat at 3, 4, 5 and 6.
/// </summary>
public sealed partial class DescriptorHygieneTests(SealedRunWorld world) : IClassFixture<SealedRunWorld>
{
    private static readonly Lazy<string> Lister = new(() => NativeBuild.Compile("prog_fd_list.c"));

    [Fact]
    public void Tibet_opens_nothing_below_1000_and_nothing_of_it_survives_exec()
    {
        var (native, encrypted) = RunBoth([], []);
        AssertSameBelow(HighDescriptors.PreferredFloor, native, encrypted);
        // The test sees tibet's descriptors: the engine's userfaultfd is there, high.
        Assert.Contains(encrypted.Self, d => d.Target == "anon_inode:[userfaultfd]" && d.Fd >= HighDescriptors.PreferredFloor);
    }

    [Fact]
    public void A_mapped_plain_model_is_read_through_a_high_descriptor()
    {
        string model = Support.Llama.SmallModel.Path;
        var (native, encrypted) = RunBoth([model], []);
        AssertSameBelow(HighDescriptors.PreferredFloor, native, encrypted);
        // FileSource keeps its own descriptor of the model, at 1000 or above.
        Assert.Contains(encrypted.Self, d => d.Target == model && d.Fd >= HighDescriptors.PreferredFloor);
    }

    [Fact]
    public void A_live_sealed_model_with_an_identity_and_an_audit_log_leaves_the_low_numbers_alone()
    {
        string log = world.PathOf($"audit-{Guid.NewGuid():N}.jsonl");
        var (native, encrypted) = RunBoth([world.SealedModel],
            ["--identity", world.Alice, "--claim", world.ClaimPath("valid"), "--audit-log", log]);
        AssertSameBelow(HighDescriptors.PreferredFloor, native, encrypted);
        Assert.Equal("granted", Assert.Single(SealedRunWorld.ReadAudit(log)).GetProperty("decision").GetString());
        Assert.Contains(encrypted.Self, d => d.Target == world.SealedModel && d.Fd >= HighDescriptors.PreferredFloor);
        // The identity's memfd_secret was read and closed, and the audit log closed after its record.
        Assert.DoesNotContain(encrypted.Self, d => d.Target.Contains("secretmem", StringComparison.Ordinal) || d.Target == log);
    }

    [Fact]
    public void Under_a_low_descriptor_limit_tibet_takes_the_top_numbers()
    {
        // prlimit --nofile=64: the floor becomes 64 - 16 = 48.
        string prlimit = TibetRun.Require("prlimit", "util-linux");
        var (native, encrypted) = RunBoth([], [], wrapper: [prlimit, "--nofile=64:64"]);
        const int floor = 64 - HighDescriptors.Headroom;
        AssertSameBelow(floor, native, encrypted);
        Assert.Contains(encrypted.Self, d => d.Target == "anon_inode:[userfaultfd]" && d.Fd is >= floor and < 64);
    }

    private sealed record Descriptor(int Fd, string Target);

    private sealed record Listing(IReadOnlyList<Descriptor> Self, IReadOnlyList<Descriptor> Child, string Raw);

    private static (Listing Native, Listing Encrypted) RunBoth(string[] programArgs, string[] options, string[]? wrapper = null)
    {
        string[] command = [Lister.Value, .. programArgs];
        string[] prefix = wrapper ?? [];
        string[] nativeCommand = [.. prefix, .. command];
        var native = TibetRun.Run(nativeCommand[0], nativeCommand[1..]);
        Assert.True(native.ExitCode == 0, native.ToString());
        var encrypted = prefix.Length > 0
            ? TibetRun.Run(prefix[0], [.. prefix[1..], TibetRun.Launcher, "--threshold", "64K", "--budget", "1M", .. options, "--", .. command])
            : TibetRun.Encrypted(["--threshold", "64K", "--budget", "1M", .. options], command);
        Assert.True(encrypted.ExitCode == 0, encrypted.ToString());
        return (Parse(native.Stdout), Parse(encrypted.Stdout));
    }

    private static Listing Parse(string stdout)
    {
        var self = new List<Descriptor>();
        var child = new List<Descriptor>();
        foreach (string line in stdout.Split('\n'))
        {
            string[] words = line.Split(' ', 3);
            if (words.Length < 3 || words[0] is not ("self" or "child"))
                continue;
            // Pipes and sockets differ in their inode number from run to run.
            var descriptor = new Descriptor(int.Parse(words[1], System.Globalization.CultureInfo.InvariantCulture), InodeNumber().Replace(words[2], ":[]"));
            (words[0] == "self" ? self : child).Add(descriptor);
        }
        Assert.NotEmpty(self);
        Assert.NotEmpty(child);
        return new Listing(self, child, stdout);
    }

    private static void AssertSameBelow(int floor, Listing native, Listing encrypted)
    {
        string Show(IEnumerable<Descriptor> list) => string.Join(", ", list.Select(d => $"{d.Fd} {d.Target}"));
        var nativeLow = native.Self.Where(d => d.Fd < floor).OrderBy(d => d.Fd).ToList();
        var encryptedLow = encrypted.Self.Where(d => d.Fd < floor).OrderBy(d => d.Fd).ToList();
        Assert.True(nativeLow.SequenceEqual(encryptedLow),
            $"below {floor}, the program's descriptors differ.\nnative:  {Show(nativeLow)}\nunder tibet-run: {Show(encryptedLow)}\n{encrypted.Raw}");
        // The executed child is not interposed: everything it holds, at any number, was inherited.
        var nativeChild = native.Child.OrderBy(d => d.Fd).ToList();
        var encryptedChild = encrypted.Child.OrderBy(d => d.Fd).ToList();
        Assert.True(nativeChild.SequenceEqual(encryptedChild),
            $"a child executed under tibet-run inherits other descriptors than natively.\nnative:  {Show(nativeChild)}\nunder tibet-run: {Show(encryptedChild)}");
    }

    [GeneratedRegex(@":\[\d+\]")]
    private static partial Regex InodeNumber();
}
