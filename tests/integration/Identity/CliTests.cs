using Tibet.Core.Identity;
using Xunit;
using static Tibet.IntegrationTests.Identities.IdentityTestSupport;

namespace Tibet.IntegrationTests.Identities;

/// <summary>The built tibet command, end to end: exit codes and the key messages.</summary>
public sealed class CliTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    private TibetCli.Result Tibet(params string[] args) => TibetCli.Run(_dir.Path, args);

    private TibetCli.Result Tibet(Dictionary<string, string?> environment, params string[] args) => TibetCli.Run(_dir.Path, environment, null, args);

    private void Keygen(string name, params string[] extra)
    {
        var result = Tibet(["keygen", "--out", name, .. extra]);
        Assert.True(result.ExitCode == 0, result.ToString());
    }

    [Fact]
    public void Keygen_writes_both_files_with_the_right_modes_and_prints_the_fingerprint()
    {
        var result = Tibet("keygen", "--out", "alice");
        Assert.Equal(0, result.ExitCode);
        Assert.Equal(0b110_000_000, ModeOf(_dir.File("alice.id")));
        Assert.Equal(0, ModeOf(_dir.File("alice.pub")) & 0b000_010_010);
        string fingerprint = IdentityFile.ReadPublic(_dir.File("alice.pub")).Fingerprint.ToString();
        Assert.Contains($"fingerprint  {fingerprint}", result.Stdout);

        var show = Tibet("identity", "show", "alice.id");
        Assert.Equal(0, show.ExitCode);
        Assert.Contains(fingerprint, show.Stdout);
        Assert.Contains("not passphrase-protected", show.Stdout);
    }

    [Fact]
    public void Keygen_refuses_to_overwrite_unless_forced()
    {
        Keygen("alice");
        string before = File.ReadAllText(_dir.File("alice.id"));

        var refused = Tibet("keygen", "--out", "alice");
        Assert.Equal(2, refused.ExitCode);
        Assert.Contains("'alice.id' already exists; choose another --out NAME, or pass --force", refused.Stderr);
        Assert.Equal(before, File.ReadAllText(_dir.File("alice.id")));

        Assert.Equal(0, Tibet("keygen", "--out", "alice.id", "--force").ExitCode); // a trailing .id is ignored
        Assert.NotEqual(before, File.ReadAllText(_dir.File("alice.id")));
        Assert.False(File.Exists(_dir.File("alice.id.id")));
    }

    [Theory]
    [InlineData(0b110_100_100, "0644")]
    [InlineData(0b110_100_000, "0640")]
    public void A_too_open_secret_file_is_refused_with_the_ssh_like_message(int mode, string shown)
    {
        Keygen("issuer");
        Keygen("alice");
        SetMode(_dir.File("issuer.id"), mode);

        var result = Tibet("claim", "issue", "--issuer", "issuer.id", "--subject", "alice.pub", "--clearance", "SECRET", "--expires", "+1d", "--out", "c.claim");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains($"tibet: permissions {shown} for 'issuer.id' are too open", result.Stderr);
        Assert.Contains("Run: chmod 600 issuer.id", result.Stderr);
        Assert.False(File.Exists(_dir.File("c.claim")));
    }

    [Fact]
    public void Passphrases_come_from_a_file_never_from_a_plain_environment_variable()
    {
        File.WriteAllText(_dir.File("pw"), "correct horse\n");
        SetMode(_dir.File("pw"), 0b110_000_000);
        File.WriteAllText(_dir.File("bad"), "wrong\n");
        SetMode(_dir.File("bad"), 0b110_000_000);
        Keygen("issuer", "--passphrase-file", "pw");
        Keygen("alice");
        Assert.Contains("passphrase-protected", Tibet("identity", "show", "issuer.id").Stdout);
        string[] issue = ["claim", "issue", "--issuer", "issuer.id", "--subject", "alice.pub", "--clearance", "SECRET", "--expires", "+1d", "--out", "c.claim", "--force"];

        var missing = Tibet(issue);
        Assert.Equal(2, missing.ExitCode);
        Assert.Contains("'issuer.id' is protected by a passphrase. Give --passphrase-file FILE, or set TIBET_PASSPHRASE_FILE", missing.Stderr);

        var wrong = Tibet([.. issue, "--passphrase-file", "bad"]);
        Assert.Equal(2, wrong.ExitCode);
        Assert.Contains("The passphrase does not open 'issuer.id'", wrong.Stderr);

        var plain = Tibet(new Dictionary<string, string?> { ["TIBET_PASSPHRASE"] = "correct horse" }, issue);
        Assert.Equal(2, plain.ExitCode);
        Assert.Contains("TIBET_PASSPHRASE is not supported", plain.Stderr);

        Assert.Equal(0, Tibet(new Dictionary<string, string?> { ["TIBET_PASSPHRASE_FILE"] = _dir.File("pw") }, issue).ExitCode);
        Assert.Equal(0, Tibet([.. issue, "--passphrase-file", "pw"]).ExitCode);
        var piped = TibetCli.Run(_dir.Path, null, "correct horse", [.. issue, "--passphrase-file", "/dev/stdin"]);
        Assert.True(piped.ExitCode == 0, piped.ToString());

        SetMode(_dir.File("pw"), 0b110_100_100);
        var open = Tibet([.. issue, "--passphrase-file", "pw"]);
        Assert.Equal(2, open.ExitCode);
        Assert.Contains("permissions 0644 for 'pw' are too open", open.Stderr);
    }

    [Fact]
    public void Claim_issue_show_and_verify_agree_and_only_valid_exits_zero()
    {
        Keygen("issuer");
        Keygen("alice");
        Keygen("mallory");

        var issued = Tibet("claim", "issue", "--issuer", "issuer.id", "--subject", "alice.pub", "--clearance", "secret",
            "--expires", "+30d", "--scope", "redis", "--scope", "models/llama", "--out", "alice.claim");
        Assert.True(issued.ExitCode == 0, issued.ToString());
        Assert.StartsWith("-----BEGIN TIBET CLAIM-----\n", File.ReadAllText(_dir.File("alice.claim")));

        var show = Tibet("claim", "show", "alice.claim");
        Assert.Equal(0, show.ExitCode);
        string issuer = IdentityFile.ReadPublic(_dir.File("issuer.pub")).Fingerprint.ToString();
        string alice = IdentityFile.ReadPublic(_dir.File("alice.pub")).Fingerprint.ToString();
        foreach (string line in new[] { $"issuer       {issuer}", $"subject      {alice}", "clearance    SECRET", "scopes       models/llama, redis", "version      1" })
            Assert.Contains(line, show.Stdout);
        foreach (string field in new[] { "claim ", "issued-at ", "not-before ", "expires ", "signature ", "verdict " })
            Assert.Contains(field, show.Stdout);

        string[] verify = ["claim", "verify", "alice.claim", "--issuer", "issuer.pub"];
        var valid = Tibet([.. verify, "--subject", "alice.pub", "--clearance", "CONFIDENTIAL", "--scope", "redis"]);
        Assert.True(valid.ExitCode == 0, valid.ToString());
        Assert.Contains("verdict      Valid: ", valid.Stdout);

        (string[] Args, string Reason)[] failures =
        [
            (["claim", "verify", "alice.claim", "--issuer", "mallory.pub"], "UntrustedIssuer"),
            ([.. verify, "--subject", "mallory.pub"], "SubjectMismatch"),
            ([.. verify, "--clearance", "TOPSECRET"], "InsufficientClearance"),
            ([.. verify, "--at", "+31d"], "Expired"),
            ([.. verify, "--at", "-1d"], "NotYetValid"),
            ([.. verify, "--scope", "postgres"], "ScopeMismatch"),
        ];
        foreach (var (args, reason) in failures)
        {
            var result = Tibet(args);
            Assert.True(result.ExitCode == 1, $"{reason}: {result}");
            Assert.Contains($"verdict      {reason}: ", result.Stdout);
            Assert.Contains($"tibet: claim 'alice.claim' is not valid: {reason}: ", result.Stderr);
        }

        // Several trusted issuers: any one of them will do.
        Assert.Equal(0, Tibet("claim", "verify", "alice.claim", "--issuer", "mallory.pub", "--issuer", "issuer.pub").ExitCode);
    }

    [Fact]
    public void A_forged_or_mangled_claim_file_is_not_valid()
    {
        Keygen("issuer");
        Keygen("alice");
        Assert.Equal(0, Tibet("claim", "issue", "--issuer", "issuer.id", "--subject", "alice.pub", "--clearance", "RESTRICTED",
            "--expires", "+1d", "--out", "c.claim").ExitCode);
        Assert.True(Claim.TryDecode(File.ReadAllBytes(_dir.File("c.claim")), out var claim, out _, out _));

        byte[] forged = claim.Encode();
        forged[^10] ^= 0x04;
        File.WriteAllBytes(_dir.File("forged.claim"), Armor.Encode("TIBET CLAIM", forged));
        foreach (string[] args in new[] { new[] { "claim", "show", "forged.claim" }, ["claim", "verify", "forged.claim", "--issuer", "issuer.pub"] })
        {
            var result = Tibet(args);
            Assert.Equal(1, result.ExitCode);
            Assert.Contains("BadSignature", result.Stderr);
        }

        File.WriteAllText(_dir.File("mangled.claim"), File.ReadAllText(_dir.File("c.claim")).Replace("\n", "\r\n", StringComparison.Ordinal));
        var mangled = Tibet("claim", "verify", "mangled.claim", "--issuer", "issuer.pub");
        Assert.Equal(1, mangled.ExitCode);
        Assert.Contains("BadEncoding", mangled.Stderr);
        Assert.Contains("line ends", mangled.Stderr);
    }

    [Fact]
    public void Bad_option_values_and_missing_files_exit_2_with_what_to_do()
    {
        Keygen("issuer");
        Keygen("alice");
        (string[] Args, string Message)[] cases =
        [
            (["claim", "issue", "--issuer", "issuer.id", "--subject", "alice.pub", "--clearance", "COSMIC", "--expires", "+1d", "--out", "x"],
                "--clearance 'COSMIC' is not a clearance level; use one of UNCLASSIFIED < RESTRICTED"),
            (["claim", "issue", "--issuer", "issuer.id", "--subject", "alice.pub", "--clearance", "SECRET", "--expires", "soon", "--out", "x"],
                "--expires 'soon' is not a time; expected an ISO-8601 date"),
            (["claim", "issue", "--issuer", "issuer.id", "--subject", "alice.pub", "--clearance", "SECRET", "--expires", "+1d", "--not-before", "+2d", "--out", "x"],
                "is not after the time the claim comes into force"),
            (["claim", "issue", "--issuer", "issuer.id", "--subject", "alice.pub", "--clearance", "SECRET", "--expires", "+1d", "--scope", "has space", "--out", "x"],
                "--scope 'has space' is not a valid scope"),
            (["claim", "issue", "--issuer", "nobody.id", "--subject", "alice.pub", "--clearance", "SECRET", "--expires", "+1d", "--out", "x"],
                "'nobody.id' does not exist"),
            (["claim", "verify", "nothing.claim", "--issuer", "issuer.pub"], "'nothing.claim' does not exist"),
            (["claim", "verify", "x"], "Option '--issuer' is required"),
            (["identity", "show", "alice.pub", "extra"], "Unrecognized command or argument 'extra'"),
            (["audit", "verify", "nothing.jsonl"], "The audit log 'nothing.jsonl' does not exist"),
            (["audit", "verify", "nothing.jsonl", "--anchor", "12"], "--anchor '12' is not N:HASH"),
            (["frobnicate"], "Try 'tibet --help'"),
        ];
        foreach (var (args, message) in cases)
        {
            var result = Tibet(args);
            Assert.True(result.ExitCode == 2, $"{string.Join(' ', args)}: {result}");
            Assert.Contains(message, result.Stderr);
        }
        Assert.False(File.Exists(_dir.File("x")));
    }

    [Fact]
    public void Audit_append_verify_head_and_anchor_work_together()
    {
        Keygen("alice");
        var environment = new Dictionary<string, string?> { ["TIBET_AUDIT_LOG"] = _dir.File("logs/audit.jsonl") };
        for (int i = 0; i < 4; i++)
        {
            var appended = Tibet(environment, "audit", "append", "--object", $"model-{i}.gguf", "--decision", i == 2 ? "denied" : "granted",
                "--reason", "Valid", "--identity", "alice.pub");
            Assert.True(appended.ExitCode == 0, appended.ToString());
            Assert.StartsWith($"{i + 1}:", appended.Stdout);
        }
        Assert.Contains(IdentityFile.ReadPublic(_dir.File("alice.pub")).Fingerprint.ToString(), File.ReadAllText(_dir.File("logs/audit.jsonl")));

        var intact = Tibet(environment, "audit", "verify");
        Assert.Equal(0, intact.ExitCode);
        Assert.Contains("intact: all 4 lines chain correctly", intact.Stdout);
        Assert.Contains("cannot show that lines were cut from the end", intact.Stdout);
        string head = Tibet(environment, "audit", "head").Stdout.Trim();
        Assert.Matches("^4:[0-9a-f]{64}$", head);

        // Cut the last line: the chain alone still holds; the recorded head does not.
        string[] lines = File.ReadAllLines(_dir.File("logs/audit.jsonl"));
        File.WriteAllLines(_dir.File("logs/audit.jsonl"), lines[..3]);
        Assert.Equal(0, Tibet("audit", "verify", "logs/audit.jsonl").ExitCode);
        var truncated = Tibet("audit", "verify", "logs/audit.jsonl", "--anchor", head);
        Assert.Equal(1, truncated.ExitCode);
        Assert.Contains("is broken at line 4: the log has 3 lines, but the anchor", truncated.Stderr);

        // Edit a line in the middle.
        lines[1] = lines[1].Replace("granted", "denied", StringComparison.Ordinal);
        File.WriteAllLines(_dir.File("logs/audit.jsonl"), lines);
        var edited = Tibet("audit", "verify", "logs/audit.jsonl");
        Assert.Equal(1, edited.ExitCode);
        Assert.Contains("audit log 'logs/audit.jsonl' is broken at line 2: line 2 was changed", edited.Stderr);
        Assert.Equal(1, Tibet("audit", "head", "logs/audit.jsonl").ExitCode);
    }

    [Fact]
    public void Without_an_explicit_log_the_documented_default_is_used()
    {
        string home = _dir.File("home");
        Directory.CreateDirectory(home);
        var environment = new Dictionary<string, string?> { ["HOME"] = home, ["XDG_STATE_HOME"] = _dir.File("state") };
        var result = Tibet(environment, "audit", "verify");
        string expected = global::Tibet.Core.Interop.Libc.geteuid() == 0 ? "/var/log/tibet/audit.jsonl" : _dir.File("state/tibet/audit.jsonl");
        // As root the default is the machine's log, which an earlier run of tibet-run
        // --identity may have written: then it is verified (0 or 1), else missing (2).
        if (File.Exists(expected))
            Assert.True(result.ExitCode is 0 or 1, $"verifying the existing default log exited {result.ExitCode}: {result.Stdout}{result.Stderr}");
        else
            Assert.Equal(2, result.ExitCode);
        Assert.Contains($"'{expected}'", result.Stdout + result.Stderr);
    }

    [Fact]
    public void Help_describes_every_command_and_exits_zero()
    {
        var help = Tibet("--help");
        Assert.Equal(0, help.ExitCode);
        foreach (string text in new[] { "tibet keygen --out NAME", "tibet claim issue", "tibet claim verify", "tibet audit verify", "TIBET_PASSPHRASE_FILE",
                     "UNCLASSIFIED < RESTRICTED < CONFIDENTIAL < SECRET < TOPSECRET", "Exit status" })
            Assert.Contains(text, help.Stdout);
        var auditHelp = Tibet("audit", "verify", "--help");
        Assert.Equal(0, auditHelp.ExitCode);
        Assert.Contains("--anchor", auditHelp.Stdout);
    }

    [Fact]
    public void Show_reads_a_public_file_and_never_prints_secrets()
    {
        Keygen("alice");
        string secretText = File.ReadAllText(_dir.File("alice.id"));
        string secretBase64 = string.Concat(secretText.Split('\n').Where(line => line.Length > 0 && !line.StartsWith("-----", StringComparison.Ordinal)));
        byte[] secrets = Convert.FromBase64String(secretBase64)[70..134];

        var show = Tibet("identity", "show", "alice.id");
        Assert.Equal(0, show.ExitCode);
        Assert.DoesNotContain(Convert.ToHexStringLower(secrets[..32]), show.Stdout);
        Assert.DoesNotContain(Convert.ToHexStringLower(secrets[32..]), show.Stdout);
        Assert.Contains("public identity", Tibet("identity", "show", "alice.pub").Stdout);
    }
}
