using System.Text.Json;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Sealing;

/// <summary>
/// A real program (native/prog_sealed_read.c) reads a sealed model under tibet-run the
/// four ways a program can: mmap, read, pread and fread. With alice's identity and a
/// valid claim it sees exactly the plain model's bytes; without, it sees zeros (dead
/// material), tibet says on stderr which check failed, and the audit log records it.
/// </summary>
public class SealedRunTests(SealedRunWorld world) : IClassFixture<SealedRunWorld>
{
    public static TheoryData<string> Modes => new() { "mmap", "read", "pread", "fread" };

    [Theory]
    [MemberData(nameof(Modes))]
    public void The_right_identity_and_claim_see_the_plain_model_in_every_read_path(string mode)
    {
        var run = world.Read(world.SealedModel, mode, ["--identity", world.Alice, "--claim", world.ClaimPath("valid")]);

        Assert.True(run.Result.ExitCode == 0, run.ToString());
        Assert.Equal(world.ExpectedLiveHash, run.Hash);
        Assert.DoesNotContain("dead material", run.Result.Stderr);
        var record = Assert.Single(run.Audit);
        Assert.Equal("granted", record.GetProperty("decision").GetString());
        Assert.Equal(world.AliceFingerprint, record.GetProperty("identity").GetString());
        Assert.Equal(world.SealedModel, record.GetProperty("object").GetString());
    }

    [Fact]
    public void A_child_forked_before_any_page_was_touched_reads_the_live_model_too()
    {
        var run = world.Read(world.SealedModel, "mmap-fork", ["--identity", world.Alice, "--claim", world.ClaimPath("valid")]);

        Assert.True(run.Result.ExitCode == 0, run.ToString());
        Assert.Contains($"child hash {world.ExpectedLiveHash} ", run.Result.Stdout);
        Assert.Equal(world.ExpectedLiveHash, run.Hash);
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public void Without_an_identity_every_read_path_sees_zeros(string mode)
    {
        var run = world.Read(world.SealedModel, mode, []);

        Assert.True(run.Result.ExitCode == 0, run.ToString());
        Assert.Equal(world.ExpectedDeadHash, run.Hash);
        Assert.Equal(0, run.Nonzero);
        AssertDead(run, "NoIdentity", identity: null);
    }

    /// <summary>Every way the claim or identity can be wrong, each named by its own reason.</summary>
    public static TheoryData<string, string, string> DeadCases => new()
    {
        { "mallory.id", "mallory", "WrongIdentity" },
        { "alice.id", "expired", "ClaimExpired" },
        { "alice.id", "not-yet-valid", "ClaimNotYetValid" },
        { "alice.id", "untrusted-issuer", "UntrustedIssuer" },
        { "alice.id", "forged", "ClaimForged" },
        { "alice.id", "subject-mismatch", "SubjectMismatch" },
        { "alice.id", "clearance-too-low", "InsufficientClearance" },
        { "alice.id", "", "NoClaim" },
    };

    [Theory]
    [MemberData(nameof(DeadCases))]
    public void A_failed_check_gives_dead_material_one_stderr_line_and_an_audit_record(string identityFile, string claim, string reason)
    {
        string[] options = claim.Length == 0
            ? ["--identity", world.PathOf(identityFile)]
            : ["--identity", world.PathOf(identityFile), "--claim", world.ClaimPath(claim)];
        // The map and a read path both: one decision per file serves both.
        var mapped = world.Read(world.SealedModel, "mmap", options);
        var read = world.Read(world.SealedModel, "fread", options);

        foreach (var run in new[] { mapped, read })
        {
            Assert.True(run.Result.ExitCode == 0, run.ToString());
            Assert.Equal(world.ExpectedDeadHash, run.Hash);
            AssertDead(run, reason, identity: identityFile == "alice.id" ? world.AliceFingerprint : "any");
        }
    }

    [Fact]
    public void A_scoped_model_is_live_for_a_claim_covering_its_scope_and_dead_for_another_scope()
    {
        var covering = world.Read(world.ScopedModel, "pread", ["--identity", world.Alice, "--claim", world.ClaimPath("scope-llama")]);
        Assert.True(covering.Result.ExitCode == 0, covering.ToString());
        Assert.Equal(world.ExpectedLiveHash, covering.Hash);

        var other = world.Read(world.ScopedModel, "pread", ["--identity", world.Alice, "--claim", world.ClaimPath("scope-other")]);
        Assert.True(other.Result.ExitCode == 0, other.ToString());
        Assert.Equal(world.ExpectedDeadHash, other.Hash);
        string line = Assert.Single(Lines(other.Result.Stderr, "dead material"));
        Assert.Contains("ScopeMismatch:", line);
        Assert.Equal("ScopeMismatch", ReasonOf(Assert.Single(other.Audit)));
    }

    [Fact]
    public void A_flipped_header_byte_is_caught_by_the_seal_and_gives_dead_material()
    {
        // A space of the header's padding string becomes '!': the model still parses, and
        // only the seal's MAC over every header byte catches it.
        byte[] header = File.ReadAllBytes(world.SealedModel).AsSpan(0, (int)world.DataOffset).ToArray();
        int key = header.AsSpan().IndexOf("tibet.header_padding"u8);
        Assert.True(key > 0, "the sealed header must carry tibet.header_padding");
        long space = key + "tibet.header_padding".Length + 4 /* type */ + 8 /* string length */ + 1;
        Assert.Equal((byte)' ', header[space]);
        string tampered = world.TamperedCopy("header-flip.gguf", space, _ => (byte)'!');
        var run = world.Read(tampered, "mmap", ["--identity", world.Alice, "--claim", world.ClaimPath("valid")]);

        Assert.True(run.Result.ExitCode == 0, run.ToString());
        Assert.Equal(world.ExpectedDeadHash, run.Hash);
        AssertDead(run, "HeaderTampered", world.AliceFingerprint);
    }

    [Fact]
    public void A_header_flip_that_breaks_parsing_is_refused_rather_than_served_raw()
    {
        // The byte before the data section lies in the tensor table: the file no longer
        // parses, so nothing says where its ciphertext lies. It still names seal keys, so
        // it is not mistaken for a plain model: a map shows zeros and reads fail.
        string tampered = world.TamperedCopy("table-flip.gguf", world.DataOffset - 1, b => (byte)(b ^ 0x01));
        string[] options = ["--identity", world.Alice, "--claim", world.ClaimPath("valid")];

        var mapped = world.Read(tampered, "mmap", options);
        Assert.True(mapped.Result.ExitCode == 0, mapped.ToString());
        Assert.Equal(world.ExpectedDeadHash, mapped.Hash);

        var read = world.Read(tampered, "read", options);
        Assert.True(read.Result.ExitCode == 3, read.ToString());
        Assert.Contains("read-error 13", read.Result.Stdout); // EACCES

        foreach (var run in new[] { mapped, read })
        {
            Assert.Single(Lines(run.Result.Stderr, "cannot be opened as one"));
            var record = Assert.Single(run.Audit);
            Assert.Equal("denied", record.GetProperty("decision").GetString());
            Assert.Equal("MalformedModel", ReasonOf(record));
        }
    }

    [Fact]
    public void A_flipped_ciphertext_byte_raises_SIGBUS_through_a_map_and_EIO_through_a_read()
    {
        string tampered = world.TamperedCopy("data-flip.gguf", world.DataOffset + 100 * 4096 + 17, b => (byte)(b ^ 0x80));
        string[] options = ["--identity", world.Alice, "--claim", world.ClaimPath("valid")];

        var mapped = world.Read(tampered, "mmap", options);
        Assert.True(mapped.Result.ExitCode == 128 + 7, "the map reader must die of SIGBUS\n" + mapped);
        Assert.Null(mapped.Hash);

        var read = world.Read(tampered, "pread", options);
        Assert.True(read.Result.ExitCode == 3, read.ToString());
        Assert.Contains("read-error 5", read.Result.Stdout); // EIO

        foreach (var run in new[] { mapped, read })
        {
            Assert.Single(Lines(run.Result.Stderr, "DataTampered"));
            Assert.Equal(["granted", "denied"], run.Audit.Select(r => r.GetProperty("decision").GetString()));
            Assert.StartsWith("DataTampered", run.Audit[1].GetProperty("reason").GetString());
        }
    }

    [Fact]
    public void A_writable_shared_map_of_a_sealed_model_is_refused()
    {
        string copy = world.TamperedCopy("writable.gguf", 0, b => b); // an identical copy we may open O_RDWR
        var run = world.Read(copy, "map-write", ["--identity", world.Alice, "--claim", world.ClaimPath("valid")]);

        Assert.True(run.Result.ExitCode == 0, run.ToString());
        Assert.Contains("map-error 13", run.Result.Stdout); // EACCES
        Assert.Contains("refused a writable shared map", run.Result.Stderr);
    }

    [Fact]
    public void Executed_programs_get_the_identity_only_with_inherit_identity()
    {
        string script = $"echo \"fd=${{TIBET_IDENTITY_FD:-none}}\"; exec \"$0\" \"$@\"";
        string[] reader = [world.Reader, world.SealedModel, world.DataOffset.ToString(), world.DataLength.ToString(), "pread"];
        string[] identity = ["--identity", world.Alice, "--claim", world.ClaimPath("valid")];

        var withheld = RunThroughShell(identity, script, reader);
        Assert.True(withheld.Result.ExitCode == 0, withheld.ToString());
        Assert.Contains("fd=none", withheld.Result.Stdout);
        Assert.Equal(world.ExpectedDeadHash, withheld.Hash);
        Assert.Equal("NoIdentity", ReasonOf(Assert.Single(withheld.Audit)));
        // The line says where the identity went and what to do about it.
        Assert.Contains("--inherit-identity", Assert.Single(Lines(withheld.Result.Stderr, "dead material")));

        var inherited = RunThroughShell([.. identity, "--inherit-identity"], script, reader);
        Assert.True(inherited.Result.ExitCode == 0, inherited.ToString());
        Assert.DoesNotContain("fd=none", inherited.Result.Stdout);
        Assert.Equal(world.ExpectedLiveHash, inherited.Hash);
        Assert.Equal("granted", Assert.Single(inherited.Audit).GetProperty("decision").GetString());
    }

    [Fact]
    public void An_unwritable_audit_log_keeps_the_model_dead()
    {
        // A path below a regular file can never be created.
        string log = Path.Combine(world.SealedModel, "audit.jsonl");
        var run = world.Read(world.SealedModel, "read", ["--identity", world.Alice, "--claim", world.ClaimPath("valid")], auditLog: log);

        Assert.True(run.Result.ExitCode == 0, run.ToString());
        Assert.Equal(world.ExpectedDeadHash, run.Hash);
        Assert.Contains("could not be recorded in the audit log", run.Result.Stderr);
    }

    [Fact]
    public void Tibet_run_refuses_unusable_identity_options_before_starting_the_program()
    {
        string marker = world.PathOf($"started-{Guid.NewGuid():N}");
        string[] program = ["/bin/sh", "-c", $"touch {marker}"];

        var claimAlone = TibetRun.Run(TibetRun.Launcher, ["--claim", world.ClaimPath("valid"), "--", .. program]);
        Assert.Equal(2, claimAlone.ExitCode);
        Assert.Contains("need --identity", claimAlone.Stderr);

        string notAClaim = world.PathOf("not-a.claim");
        File.WriteAllText(notAClaim, "-----BEGIN TIBET CLAIM-----\nnot base64 at all\n-----END TIBET CLAIM-----\n");
        var badClaim = TibetRun.Run(TibetRun.Launcher, ["--identity", world.Alice, "--claim", notAClaim, "--", .. program]);
        Assert.Equal(2, badClaim.ExitCode);
        Assert.Contains("is not a claim", badClaim.Stderr);

        string exposed = world.PathOf("exposed.id");
        File.Copy(world.Alice, exposed, overwrite: true);
        Identities.IdentityTestSupport.SetMode(exposed, 0b110_100_100);
        var open = TibetRun.Run(TibetRun.Launcher, ["--identity", exposed, "--", .. program]);
        Assert.Equal(2, open.ExitCode);
        Assert.Contains("0644", open.Stderr);

        Assert.False(File.Exists(marker), "the program must not have been started");
    }

    [Theory]
    [InlineData("0")]       // standard input: not a hand-off
    [InlineData("12")]      // not an open descriptor
    [InlineData("three")]   // not a number
    public void A_hostile_identity_descriptor_variable_stops_the_program_with_a_clear_line(string value)
    {
        string library = Path.Combine(RepoPaths.Root, "out", "lib", "libtibet.so");
        var result = TibetRun.Run(world.Reader, [world.SealedModel, "0", "4096", "pread"], stdin: "",
            environment: new Dictionary<string, string?> { ["LD_PRELOAD"] = library, ["TIBET_IDENTITY_FD"] = value });

        Assert.Equal(2, result.ExitCode);
        Assert.Single(Lines(result.Stderr, "TIBET_IDENTITY_FD"));
        Assert.DoesNotContain("hash", result.Stdout);
    }

    private ReaderRun RunThroughShell(string[] options, string script, string[] reader)
    {
        string log = world.PathOf($"audit-{Guid.NewGuid():N}.jsonl");
        var result = TibetRun.Encrypted(["--audit-log", log, .. options], ["/bin/sh", "-c", script, .. reader]);
        return new ReaderRun(result, SealedRunWorld.ReadAudit(log));
    }

    /// <summary>Dead: the one stderr line names the reason, and the one audit record denies
    /// with it. <paramref name="identity"/> is the fingerprint expected in the record, null
    /// for none, "any" for any.</summary>
    private void AssertDead(ReaderRun run, string reason, string? identity)
    {
        string line = Assert.Single(Lines(run.Result.Stderr, "dead material"));
        Assert.Contains(reason + ":", line);
        var record = Assert.Single(run.Audit);
        Assert.Equal("denied", record.GetProperty("decision").GetString());
        Assert.Equal(reason, ReasonOf(record));
        if (identity != "any")
            Assert.Equal(identity, record.GetProperty("identity").ValueKind == JsonValueKind.Null ? null : record.GetProperty("identity").GetString());
    }

    private static string ReasonOf(JsonElement record) => record.GetProperty("reason").GetString()!.Split(':')[0];

    private static string[] Lines(string text, string containing) =>
        text.Split('\n').Where(line => line.Contains(containing, StringComparison.Ordinal)).ToArray();
}
