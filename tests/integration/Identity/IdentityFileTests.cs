using System.Text;
using Tibet.Core.Identity;
using Xunit;
using SecretIdentity = Tibet.Core.Identity.Identity;
using static Tibet.IntegrationTests.Identities.IdentityTestSupport;

namespace Tibet.IntegrationTests.Identities;

/// <summary>Secret and public identity files: modes, refusals, round trips, passphrases.</summary>
public class IdentityFileTests
{
    [Fact]
    public void Written_identity_has_a_0600_secret_file_a_public_file_and_no_leftovers()
    {
        using var dir = new TempDirectory();
        using var identity = SecretIdentity.Generate();

        IdentityFile.WriteSecret(dir.File("alice.id"), identity);
        IdentityFile.WritePublic(dir.File("alice.pub"), identity.Public);

        Assert.Equal(0b110_000_000, ModeOf(dir.File("alice.id")));
        Assert.Equal(0, ModeOf(dir.File("alice.pub")) & ~0b110_100_100); // at most 0644, less the umask
        Assert.Equal(["alice.id", "alice.pub"], Directory.GetFiles(dir.Path).Select(path => Path.GetFileName(path)!).Order().ToArray());
        Assert.StartsWith("-----BEGIN TIBET SECRET IDENTITY-----\n", File.ReadAllText(dir.File("alice.id")));
        Assert.StartsWith("-----BEGIN TIBET PUBLIC IDENTITY-----\n", File.ReadAllText(dir.File("alice.pub")));

        using var loaded = IdentityFile.ReadSecret(dir.File("alice.id"));
        Assert.Equal(identity.Fingerprint, loaded.Fingerprint);
        Assert.Equal(identity.Fingerprint, IdentityFile.ReadPublic(dir.File("alice.pub")).Fingerprint);
        Assert.Equal(identity.Fingerprint, IdentityFile.ReadPublic(dir.File("alice.id")).Fingerprint);
    }

    [Fact]
    public void Fingerprint_is_the_sha256_of_the_public_file_body()
    {
        using var identity = SecretIdentity.Generate();
        string armored = Encoding.ASCII.GetString(IdentityFile.EncodePublic(identity.Public));
        string base64 = string.Concat(armored.Split('\n').Where(line => line.Length > 0 && !line.StartsWith("-----", StringComparison.Ordinal)));
        byte[] body = Convert.FromBase64String(base64);

        Assert.Equal(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(body)), identity.Fingerprint.ToString());
        Assert.Equal(PublicIdentity.EncodedSize, body.Length);
        Assert.Equal(identity.Fingerprint.ToString()[..Fingerprint.ShortLength], identity.Fingerprint.ToShortString());
    }

    [Fact]
    public void Two_generated_identities_differ()
    {
        using var first = SecretIdentity.Generate();
        using var second = SecretIdentity.Generate();
        Assert.NotEqual(first.Fingerprint, second.Fingerprint);
        Assert.False(first.Public.AgreementKey.SequenceEqual(second.Public.AgreementKey));
        Assert.False(first.Public.SigningKey.SequenceEqual(second.Public.SigningKey));
    }

    [Fact]
    public void An_existing_file_is_never_overwritten_without_being_asked()
    {
        using var dir = new TempDirectory();
        using var first = SecretIdentity.Generate();
        using var second = SecretIdentity.Generate();
        IdentityFile.WriteSecret(dir.File("a.id"), first);

        var refused = Assert.Throws<IdentityException>(() => IdentityFile.WriteSecret(dir.File("a.id"), second));
        Assert.Equal(IdentityErrorKind.AlreadyExists, refused.Kind);
        Assert.Contains("already exists", refused.Message);
        using (var kept = IdentityFile.ReadSecret(dir.File("a.id")))
            Assert.Equal(first.Fingerprint, kept.Fingerprint);

        IdentityFile.WriteSecret(dir.File("a.id"), second, overwrite: true);
        using (var replaced = IdentityFile.ReadSecret(dir.File("a.id")))
            Assert.Equal(second.Fingerprint, replaced.Fingerprint);
        Assert.Equal(0b110_000_000, ModeOf(dir.File("a.id")));
        Assert.Single(Directory.GetFiles(dir.Path));
    }

    [Fact]
    public void A_symlink_planted_at_the_secret_path_is_never_followed()
    {
        using var dir = new TempDirectory();
        string victim = dir.File("victim");
        File.WriteAllText(victim, "precious");
        File.CreateSymbolicLink(dir.File("a.id"), victim);
        using var identity = SecretIdentity.Generate();

        var refused = Assert.Throws<IdentityException>(() => IdentityFile.WriteSecret(dir.File("a.id"), identity));
        Assert.Equal(IdentityErrorKind.AlreadyExists, refused.Kind);
        Assert.Equal("precious", File.ReadAllText(victim));

        // Replacing renames over the link itself; the file it pointed to is untouched.
        IdentityFile.WriteSecret(dir.File("a.id"), identity, overwrite: true);
        Assert.Equal("precious", File.ReadAllText(victim));
        Assert.Null(new FileInfo(dir.File("a.id")).LinkTarget);
    }

    [Theory]
    [InlineData(0b110_100_100, "0644")]
    [InlineData(0b110_100_000, "0640")]
    [InlineData(0b110_000_100, "0604")]
    [InlineData(0b110_110_000, "0660")]
    [InlineData(0b111_000_001, "0701")]
    public void A_secret_file_that_group_or_others_can_access_is_refused_like_ssh_does(int mode, string shown)
    {
        using var dir = new TempDirectory();
        using var identity = SecretIdentity.Generate();
        string path = dir.File("x.id");
        IdentityFile.WriteSecret(path, identity);
        SetMode(path, mode);

        foreach (Action load in new Action[] { () => IdentityFile.ReadSecret(path).Dispose(), () => IdentityFile.ReadPublic(path) })
        {
            var refused = Assert.Throws<IdentityException>(load);
            Assert.Equal(IdentityErrorKind.PermissionsTooOpen, refused.Kind);
            Assert.Contains($"permissions {shown} for '{path}' are too open", refused.Message);
            Assert.Contains($"chmod 600 {path}", refused.Message);
        }

        SetMode(path, 0b100_000_000); // 0400 is fine too
        using var loaded = IdentityFile.ReadSecret(path);
        Assert.Equal(identity.Fingerprint, loaded.Fingerprint);
    }

    [Fact]
    public void The_chmod_suggestion_quotes_a_path_that_needs_it()
    {
        using var dir = new TempDirectory();
        using var identity = SecretIdentity.Generate();
        string path = dir.File("my key's.id");
        IdentityFile.WriteSecret(path, identity);
        SetMode(path, 0b110_100_100);

        var refused = Assert.Throws<IdentityException>(() => IdentityFile.ReadSecret(path));
        Assert.Contains($"chmod 600 '{path.Replace("'", "'\\''", StringComparison.Ordinal)}'", refused.Message);
    }

    [Fact]
    public void Missing_files_and_wrong_kinds_give_clear_errors()
    {
        using var dir = new TempDirectory();
        using var identity = SecretIdentity.Generate();
        IdentityFile.WritePublic(dir.File("a.pub"), identity.Public);
        SetMode(dir.File("a.pub"), 0b110_000_000);

        var missing = Assert.Throws<IdentityException>(() => IdentityFile.ReadSecret(dir.File("nope.id")));
        Assert.Equal(IdentityErrorKind.NotFound, missing.Kind);
        Assert.Contains("does not exist", missing.Message);

        var wrongKind = Assert.Throws<IdentityException>(() => IdentityFile.ReadSecret(dir.File("a.pub")));
        Assert.Equal(IdentityErrorKind.Malformed, wrongKind.Kind);
        Assert.Contains("is a 'TIBET PUBLIC IDENTITY' file, not a 'TIBET SECRET IDENTITY' file", wrongKind.Message);

        var directory = Assert.Throws<IdentityException>(() => IdentityFile.ReadPublic(dir.Path));
        Assert.Contains("is a directory", directory.Message);

        var noDirectory = Assert.Throws<IdentityException>(() => IdentityFile.WriteSecret(dir.File("no/such/dir/a.id"), identity));
        Assert.Equal(IdentityErrorKind.NotFound, noDirectory.Kind);
        Assert.Contains("does not exist; create it first", noDirectory.Message);
    }

    [Fact]
    public void Passphrase_protected_identity_round_trips_and_keeps_its_public_keys_readable()
    {
        using var dir = new TempDirectory();
        using var identity = SecretIdentity.Generate();
        string path = dir.File("p.id");
        using (var passphrase = Passphrase.FromUtf8("correct horse battery staple"u8))
            IdentityFile.WriteSecret(path, identity, passphrase: passphrase, cost: CheapCost);

        Assert.True(IdentityFile.IsPassphraseProtected(path));
        Assert.Equal(identity.Fingerprint, IdentityFile.ReadPublic(path, out var kind).Fingerprint);
        Assert.Equal(IdentityFileKind.ProtectedSecret, kind);

        int asked = 0;
        using var loaded = IdentityFile.ReadSecret(path, () => { asked++; return PassphraseOf("correct horse battery staple")(); });
        Assert.Equal(identity.Fingerprint, loaded.Fingerprint);
        Assert.Equal(1, asked);

        // The keys really are the same: a claim signed by the loaded identity verifies with the original's public keys.
        var claim = Claim.Issue(loaded, identity.Public, ClearanceLevel.Secret, DateTimeOffset.UtcNow, DateTimeOffset.UtcNow.AddHours(1));
        Assert.True(ClaimVerifier.Verify(claim.Encode(), new ClaimRequirements { TrustedIssuers = [identity.Public] }).IsValid);
    }

    [Fact]
    public void Wrong_or_missing_passphrase_gives_a_clear_error_and_no_identity()
    {
        using var dir = new TempDirectory();
        using var identity = SecretIdentity.Generate();
        string path = dir.File("p.id");
        using (var passphrase = Passphrase.FromUtf8("right"u8))
            IdentityFile.WriteSecret(path, identity, passphrase: passphrase, cost: CheapCost);

        var wrong = Assert.Throws<IdentityException>(() => IdentityFile.ReadSecret(path, PassphraseOf("wrong")));
        Assert.Equal(IdentityErrorKind.WrongPassphrase, wrong.Kind);
        Assert.Contains("passphrase does not open", wrong.Message);

        var missing = Assert.Throws<IdentityException>(() => IdentityFile.ReadSecret(path));
        Assert.Equal(IdentityErrorKind.PassphraseRequired, missing.Kind);
        Assert.Contains("protected by a passphrase", missing.Message);
    }

    [Fact]
    public void An_unprotected_identity_never_asks_for_a_passphrase()
    {
        using var dir = new TempDirectory();
        using var identity = SecretIdentity.Generate();
        IdentityFile.WriteSecret(dir.File("u.id"), identity);
        Assert.False(IdentityFile.IsPassphraseProtected(dir.File("u.id")));
        using var loaded = IdentityFile.ReadSecret(dir.File("u.id"), () => throw new InvalidOperationException("asked"));
        Assert.Equal(identity.Fingerprint, loaded.Fingerprint);
    }

    [Fact]
    public void Passphrase_files_lose_one_final_newline_must_be_private_and_must_not_be_empty()
    {
        using var dir = new TempDirectory();
        using var identity = SecretIdentity.Generate();
        using (var passphrase = Passphrase.FromUtf8("s3cret"u8))
            IdentityFile.WriteSecret(dir.File("p.id"), identity, passphrase: passphrase, cost: CheapCost);

        foreach (string contents in new[] { "s3cret", "s3cret\n", "s3cret\r\n" })
        {
            File.WriteAllText(dir.File("pw"), contents);
            SetMode(dir.File("pw"), 0b110_000_000);
            using var loaded = IdentityFile.ReadSecret(dir.File("p.id"), () => Passphrase.FromFile(dir.File("pw")));
            Assert.Equal(identity.Fingerprint, loaded.Fingerprint);
        }

        SetMode(dir.File("pw"), 0b110_100_100);
        var open = Assert.Throws<IdentityException>(() => Passphrase.FromFile(dir.File("pw")));
        Assert.Equal(IdentityErrorKind.PermissionsTooOpen, open.Kind);
        Assert.Contains("chmod 600", open.Message);

        File.WriteAllText(dir.File("empty"), "\n");
        SetMode(dir.File("empty"), 0b110_000_000);
        var empty = Assert.Throws<IdentityException>(() => Passphrase.FromFile(dir.File("empty")));
        Assert.Equal(IdentityErrorKind.InvalidPassphrase, empty.Kind);
        Assert.Contains("is empty", empty.Message);

        Assert.Equal(IdentityErrorKind.InvalidPassphrase,
            Assert.Throws<IdentityException>(() => Passphrase.FromUtf8(new byte[Passphrase.MaxLength + 1])).Kind);
    }

    [Fact]
    public void Protected_file_records_its_argon2_cost_and_rejects_costs_outside_the_bounds()
    {
        using var identity = SecretIdentity.Generate();
        using var passphrase = Passphrase.FromUtf8("pw"u8);
        byte[] text = IdentityFile.EncodeSecret(identity, passphrase, new Argon2Cost(2048, 2));
        byte[] body = Dearmor("TIBET SECRET IDENTITY", text);
        Assert.Equal(2048u, BitConverter.ToUInt32(body, 70));
        Assert.Equal(2u, BitConverter.ToUInt32(body, 74));

        // A doctored file asking for 4 GiB of memory is refused before any work is done.
        BitConverter.TryWriteBytes(body.AsSpan(70), 4u * 1024 * 1024);
        byte[] doctored = Armor.Encode("TIBET SECRET IDENTITY", body);
        var refused = Assert.Throws<IdentityException>(() => IdentityFile.DecodeSecret(doctored, PassphraseOf("pw"), "doctored.id"));
        Assert.Equal(IdentityErrorKind.Malformed, refused.Kind);
        Assert.Contains("Argon2id cost", refused.Message);

        Assert.Throws<ArgumentOutOfRangeException>(() => new Argon2Cost(Argon2Cost.MaxMemoryKiB + 1, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => new Argon2Cost(Argon2Cost.MinMemoryKiB, 0));
    }

    [Fact]
    public void Editing_the_public_keys_stored_beside_the_secrets_is_detected()
    {
        using var identity = SecretIdentity.Generate();
        using var other = SecretIdentity.Generate();
        byte[] body = Dearmor("TIBET SECRET IDENTITY", IdentityFile.EncodeSecret(identity, null, null));
        other.Public.SigningKey.CopyTo(body.AsSpan(38));

        var refused = Assert.Throws<IdentityException>(() => IdentityFile.DecodeSecret(Armor.Encode("TIBET SECRET IDENTITY", body), null, "edited.id"));
        Assert.Equal(IdentityErrorKind.Malformed, refused.Kind);
        Assert.Contains("do not belong to the public keys", refused.Message);

        using var passphrase = Passphrase.FromUtf8("pw"u8);
        byte[] protectedBody = Dearmor("TIBET SECRET IDENTITY", IdentityFile.EncodeSecret(identity, passphrase, CheapCost));
        other.Public.SigningKey.CopyTo(protectedBody.AsSpan(38));
        // The public keys are associated data of the encryption: the right passphrase no longer opens it.
        Assert.Equal(IdentityErrorKind.WrongPassphrase, Assert.Throws<IdentityException>(
            () => IdentityFile.DecodeSecret(Armor.Encode("TIBET SECRET IDENTITY", protectedBody), PassphraseOf("pw"), "edited.id")).Kind);
    }

    [Fact]
    public void A_loaded_identity_cannot_be_exported_again()
    {
        using var dir = new TempDirectory();
        using var identity = SecretIdentity.Generate();
        IdentityFile.WriteSecret(dir.File("a.id"), identity);
        using var loaded = IdentityFile.ReadSecret(dir.File("a.id"));
        Assert.Throws<InvalidOperationException>(() => IdentityFile.WriteSecret(dir.File("b.id"), loaded));
        Assert.False(File.Exists(dir.File("b.id")));
    }

    [Fact]
    public void Newer_format_versions_are_reported_as_such()
    {
        using var identity = SecretIdentity.Generate();
        byte[] body = identity.Public.Encode();
        body[4] = 2;
        var newer = Assert.Throws<IdentityException>(() => IdentityFile.DecodePublic(Armor.Encode("TIBET PUBLIC IDENTITY", body), "new.pub"));
        Assert.Equal(IdentityErrorKind.UnsupportedVersion, newer.Kind);
        Assert.Contains("upgrade tibet", newer.Message);
    }

    internal static byte[] Dearmor(string label, ReadOnlySpan<byte> text)
    {
        var body = new byte[Armor.MaxDecodedLength(text.Length)];
        Assert.True(Armor.TryDecode(label, text, body, out int length, out string problem), problem);
        return body[..length];
    }
}
