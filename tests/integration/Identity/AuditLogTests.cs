using System.Text;
using System.Text.Json;
using Tibet.Core.Audit;
using Xunit;
using static Tibet.IntegrationTests.Identities.IdentityTestSupport;
using SecretIdentity = Tibet.Core.Identity.Identity;

namespace Tibet.IntegrationTests.Identities;

/// <summary>The hash-chained audit log: format, and that verification names the first
/// bad line for every kind of tampering.</summary>
public sealed class AuditLogTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>A log of <paramref name="count"/> records, returned as its lines (without newlines).</summary>
    private (string Path, List<string> Lines, AuditAnchor Head) WriteLog(int count)
    {
        string path = _dir.File($"log-{Guid.NewGuid():N}/audit.jsonl");
        var log = new AuditLog(path);
        AuditAnchor head = null!;
        for (int i = 1; i <= count; i++)
            head = log.Append(new AuditEntry
            {
                Object = $"model-{i}.gguf",
                Decision = i % 3 == 0 ? AuditDecision.Denied : AuditDecision.Granted,
                Reason = i % 3 == 0 ? "Expired" : "Valid",
                Program = "/usr/bin/test-program",
            });
        return (path, File.ReadAllText(path).TrimEnd('\n').Split('\n').ToList(), head);
    }

    private static AuditVerification VerifyLines(IEnumerable<string> lines, AuditAnchor? anchor = null) =>
        AuditVerifier.Verify(Encoding.UTF8.GetBytes(string.Concat(lines.Select(line => line + "\n"))), anchor);

    [Fact]
    public void Records_are_one_json_line_each_with_every_field_and_a_chain()
    {
        using var identity = SecretIdentity.Generate();
        string path = _dir.File("state/tibet/audit.jsonl");
        var log = new AuditLog(path);
        AuditAnchor first = log.Append(new AuditEntry { Object = "m.gguf", Decision = AuditDecision.Granted, Reason = "Valid", Identity = identity.Fingerprint });
        AuditAnchor second = log.Append(new AuditEntry { Object = "m.gguf", Decision = AuditDecision.Denied, Reason = "no claim \"quoted\"\nnewline" });

        Assert.Equal(0b110_000_000, ModeOf(path));
        Assert.Equal(0b111_000_000, ModeOf(Path.GetDirectoryName(path)!));
        string[] lines = File.ReadAllText(path).Split('\n');
        Assert.Equal(3, lines.Length);
        Assert.Equal("", lines[2]);

        using var one = JsonDocument.Parse(lines[0]);
        var record = one.RootElement;
        Assert.Equal(["v", "seq", "time", "pid", "program", "identity", "object", "decision", "reason", "prev"],
            record.EnumerateObject().Select(property => property.Name).ToArray());
        Assert.Equal(1, record.GetProperty("seq").GetInt64());
        Assert.Equal(Environment.ProcessId, record.GetProperty("pid").GetInt32());
        Assert.Equal(Environment.ProcessPath, record.GetProperty("program").GetString());
        Assert.Equal(identity.Fingerprint.ToString(), record.GetProperty("identity").GetString());
        Assert.Equal("granted", record.GetProperty("decision").GetString());
        Assert.Equal(new string('0', 64), record.GetProperty("prev").GetString());
        var time = DateTime.Parse(record.GetProperty("time").GetString()!, null, System.Globalization.DateTimeStyles.RoundtripKind);
        Assert.Equal(DateTimeKind.Utc, time.Kind);
        Assert.InRange(DateTime.UtcNow - time, TimeSpan.Zero, TimeSpan.FromMinutes(1));

        using var two = JsonDocument.Parse(lines[1]);
        Assert.Equal(JsonValueKind.Null, two.RootElement.GetProperty("identity").ValueKind);
        Assert.Equal("no claim \"quoted\"\nnewline", two.RootElement.GetProperty("reason").GetString());
        string firstHash = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(lines[0])));
        Assert.Equal(firstHash, two.RootElement.GetProperty("prev").GetString());
        Assert.Equal(new AuditAnchor(1, firstHash), first);
        Assert.Equal(2, second.Line);

        var verification = AuditVerifier.VerifyFile(path);
        Assert.True(verification.IsIntact, verification.Message);
        Assert.Equal(2, verification.LinesChecked);
        Assert.Equal(second, verification.Head);
    }

    [Fact]
    public void Over_long_and_odd_texts_are_cut_and_kept_valid()
    {
        string path = _dir.File("odd.jsonl");
        var log = new AuditLog(path);
        log.Append(new AuditEntry { Object = new string('o', 100_000), Decision = AuditDecision.Denied, Reason = "\ud800 lone surrogate \u0001", Program = "ü/\"prog\"" });
        log.Append(new AuditEntry { Object = "after", Decision = AuditDecision.Granted, Reason = "ok" });
        Assert.True(AuditVerifier.VerifyFile(path).IsIntact);
        using var record = JsonDocument.Parse(File.ReadLines(path).First());
        Assert.Equal(AuditEntry.MaxTextLength, record.RootElement.GetProperty("object").GetString()!.Length);
        Assert.EndsWith("…", record.RootElement.GetProperty("object").GetString());
        Assert.Equal("ü/\"prog\"", record.RootElement.GetProperty("program").GetString());
    }

    [Fact]
    public void An_edited_line_is_named()
    {
        var (_, lines, _) = WriteLog(6);
        lines[2] = lines[2].Replace("\"denied\"", "\"granted\"", StringComparison.Ordinal);
        var verification = VerifyLines(lines);
        Assert.False(verification.IsIntact);
        Assert.Equal(3, verification.FirstBadLine);
        Assert.Contains("line 3 was changed", verification.Message);
    }

    [Fact]
    public void An_edited_first_line_is_named()
    {
        var (_, lines, _) = WriteLog(4);
        lines[0] = lines[0].Replace("model-1", "model-X", StringComparison.Ordinal);
        Assert.Equal(1, VerifyLines(lines).FirstBadLine);
    }

    [Fact]
    public void A_line_whose_prev_field_was_edited_is_named()
    {
        var (_, lines, _) = WriteLog(6);
        string prev = JsonDocument.Parse(lines[3]).RootElement.GetProperty("prev").GetString()!;
        lines[3] = lines[3].Replace(prev, new string('a', 64), StringComparison.Ordinal);
        var verification = VerifyLines(lines);
        Assert.Equal(4, verification.FirstBadLine);
        Assert.Contains("line 4 was changed", verification.Message);
    }

    [Fact]
    public void An_inserted_copy_of_another_line_is_named()
    {
        var (_, lines, _) = WriteLog(6);
        lines.Insert(4, lines[1]); // a copy of line 2 becomes line 5
        var verification = VerifyLines(lines);
        Assert.Equal(5, verification.FirstBadLine);
        Assert.Contains("out of place", verification.Message);
    }

    [Fact]
    public void A_repeated_line_is_named()
    {
        var (_, lines, _) = WriteLog(6);
        lines.Insert(3, lines[2]); // line 3 twice; the repeat is line 4
        var verification = VerifyLines(lines);
        Assert.Equal(4, verification.FirstBadLine);
        Assert.Contains("repeats line 3", verification.Message);
    }

    [Fact]
    public void A_forged_line_with_the_right_hash_and_number_is_named()
    {
        var (_, lines, _) = WriteLog(6);
        // The forger links a new line 4 correctly to line 3 and gives it number 4, but
        // cannot make the old line 4 (now line 5) point at it without rewriting everything after.
        using var third = JsonDocument.Parse(lines[3]);
        string forged = lines[3]
            .Replace(third.RootElement.GetProperty("object").GetString()!, "forged.gguf", StringComparison.Ordinal);
        lines.Insert(3, forged);
        var verification = VerifyLines(lines);
        Assert.Equal(4, verification.FirstBadLine);
        Assert.Contains("line 4 was inserted", verification.Message);
    }

    [Fact]
    public void Reordered_lines_are_named()
    {
        var (_, lines, _) = WriteLog(6);
        (lines[2], lines[3]) = (lines[3], lines[2]);
        var verification = VerifyLines(lines);
        Assert.Equal(3, verification.FirstBadLine);
        Assert.Contains("reordered", verification.Message);
    }

    [Fact]
    public void A_deleted_middle_line_is_named()
    {
        var (_, lines, _) = WriteLog(6);
        lines.RemoveAt(2);
        var verification = VerifyLines(lines);
        Assert.Equal(3, verification.FirstBadLine);
        Assert.Contains("removed", verification.Message);
    }

    [Fact]
    public void A_deleted_first_line_is_named()
    {
        var (_, lines, _) = WriteLog(4);
        lines.RemoveAt(0);
        Assert.Equal(1, VerifyLines(lines).FirstBadLine);
    }

    [Fact]
    public void A_deleted_last_line_needs_the_anchor_to_be_seen()
    {
        var (_, lines, head) = WriteLog(6);
        lines.RemoveAt(5);

        // The documented limit of a chain: what is left is still a valid chain.
        var unanchored = VerifyLines(lines);
        Assert.True(unanchored.IsIntact);
        Assert.Equal(5, unanchored.LinesChecked);

        var anchored = VerifyLines(lines, head);
        Assert.Equal(6, anchored.FirstBadLine);
        Assert.Contains("removed from its end", anchored.Message);
    }

    [Fact]
    public void An_anchor_catches_a_log_rewritten_with_fresh_hashes_and_allows_growth()
    {
        var (path, _, head) = WriteLog(5);
        Assert.True(AuditVerifier.VerifyFile(path, head).IsIntact);
        new AuditLog(path).Append(new AuditEntry { Object = "later", Decision = AuditDecision.Granted, Reason = "Valid" });
        Assert.True(AuditVerifier.VerifyFile(path, head).IsIntact); // an old anchor still holds after appends

        // Someone with write access regenerates the whole log: a valid chain, but not the one anchored.
        string rewritten = _dir.File("rewritten.jsonl");
        var forger = new AuditLog(rewritten);
        for (int i = 1; i <= 6; i++)
            forger.Append(new AuditEntry { Object = $"model-{i}.gguf", Decision = AuditDecision.Granted, Reason = "Valid", Program = "/usr/bin/test-program" });
        Assert.True(AuditVerifier.VerifyFile(rewritten).IsIntact);
        var verification = AuditVerifier.VerifyFile(rewritten, head);
        Assert.Equal(5, verification.FirstBadLine);
        Assert.Contains("does not match the anchor", verification.Message);
    }

    [Fact]
    public void A_torn_last_line_is_named_and_stops_further_appends()
    {
        var (path, lines, _) = WriteLog(3);
        File.WriteAllText(path, string.Concat(lines.Take(2).Select(line => line + "\n")) + lines[2][..40]);

        var verification = AuditVerifier.VerifyFile(path);
        Assert.Equal(3, verification.FirstBadLine);
        Assert.Contains("incomplete", verification.Message);

        var refused = Assert.Throws<AuditLogException>(() =>
            new AuditLog(path).Append(new AuditEntry { Object = "x", Decision = AuditDecision.Granted, Reason = "Valid" }));
        Assert.Contains("incomplete line", refused.Message);
        Assert.Contains("tibet audit verify", refused.Message);
    }

    [Theory]
    [InlineData("not json at all")]
    [InlineData("{}")]
    [InlineData("{\"v\":1}")]
    [InlineData("[1,2,3]")]
    public void A_line_that_is_no_record_is_named(string garbage)
    {
        var (_, lines, _) = WriteLog(4);
        lines[1] = garbage;
        var verification = VerifyLines(lines);
        Assert.Equal(2, verification.FirstBadLine);
        Assert.Contains("is not a TIBET audit record", verification.Message);
    }

    [Fact]
    public void A_file_and_the_same_bytes_in_memory_verify_alike()
    {
        var (path, lines, _) = WriteLog(10);
        lines[6] = lines[6].Replace("Valid", "Valjd", StringComparison.Ordinal);
        File.WriteAllText(path, string.Concat(lines.Select(line => line + "\n")));
        Assert.Equal(VerifyLines(lines).FirstBadLine, AuditVerifier.VerifyFile(path).FirstBadLine);
        Assert.Equal(7, AuditVerifier.VerifyFile(path).FirstBadLine);
    }

    [Fact]
    public void An_empty_log_is_intact_and_a_missing_one_is_an_error()
    {
        File.WriteAllText(_dir.File("empty.jsonl"), "");
        var verification = AuditVerifier.VerifyFile(_dir.File("empty.jsonl"));
        Assert.True(verification.IsIntact);
        Assert.Equal(new AuditAnchor(0, new string('0', 64)), verification.Head);

        var missing = Assert.Throws<AuditLogException>(() => AuditVerifier.VerifyFile(_dir.File("missing.jsonl")));
        Assert.Contains("does not exist", missing.Message);
    }

    [Fact]
    public void Anchors_parse_and_print_as_line_colon_hash()
    {
        string hash = new('a', 64);
        Assert.True(AuditAnchor.TryParse($"12:{hash}", out var anchor));
        Assert.Equal(12, anchor.Line);
        Assert.Equal($"12:{hash}", anchor.ToString());
        Assert.True(AuditAnchor.TryParse($"3:{hash.ToUpperInvariant()}", out var upper));
        Assert.Equal(hash, upper.Hash);
        foreach (string bad in new[] { "", "12", $"x:{hash}", $"-1:{hash}", "12:abc", $"12:{hash}0", $"0:{hash}" })
            Assert.False(AuditAnchor.TryParse(bad, out _), bad);
    }

    [Fact]
    public void Seeded_random_damage_to_an_anchored_log_is_always_detected()
    {
        var (_, lines, head) = WriteLog(20);
        byte[] original = Encoding.UTF8.GetBytes(string.Concat(lines.Select(line => line + "\n")));
        var random = new Random(8080);
        int detected = 0;
        for (int i = 0; i < 3000; i++)
        {
            byte[] damaged = Corruptor.Corrupt(original, random);
            AuditVerification verification;
            try
            {
                verification = AuditVerifier.Verify(damaged, head);
            }
            catch (Exception e)
            {
                throw new Xunit.Sdk.XunitException($"case {i} crashed: {e}");
            }
            if (damaged.AsSpan().SequenceEqual(original))
            {
                Assert.True(verification.IsIntact);
                continue;
            }
            Assert.False(verification.IsIntact, $"case {i}: damage went unnoticed");
            Assert.InRange(verification.FirstBadLine!.Value, 1, 21);
            detected++;
        }
        Assert.True(detected > 2900);
    }

    [Fact]
    public void The_default_location_honours_the_environment_variable_and_an_explicit_path()
    {
        Assert.Equal("/x/explicit.jsonl", AuditLogLocation.Resolve("/x/explicit.jsonl"));
        string? saved = Environment.GetEnvironmentVariable(AuditLogLocation.EnvironmentVariable);
        try
        {
            Environment.SetEnvironmentVariable(AuditLogLocation.EnvironmentVariable, "/y/from-env.jsonl");
            Assert.Equal("/y/from-env.jsonl", AuditLogLocation.Resolve());
            Assert.Equal("/y/from-env.jsonl", new AuditLog().Path);
        }
        finally
        {
            Environment.SetEnvironmentVariable(AuditLogLocation.EnvironmentVariable, saved);
        }
    }
}
