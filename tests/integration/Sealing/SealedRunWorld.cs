using System.Globalization;
using System.Text.Json;
using Tibet.Core.Gguf;
using Tibet.Core.Identity;
using Tibet.Core.Sealing;
using Tibet.IntegrationTests.Support;

namespace Tibet.IntegrationTests.Sealing;

// Beside Tibet.IntegrationTests.Identity, the bare name Identity means that namespace.
using Identity = Tibet.Core.Identity.Identity;

/// <summary>
/// Files for running real programs on a sealed model under tibet-run: the small llama
/// model sealed to alice at CONFIDENTIAL, trusting one issuer; identity files for alice
/// and mallory; claims valid and invalid in every way the access decision checks, all
/// against the real clock (the interposer decides at the time of the run); and the
/// reader program. Built once per test class.
/// </summary>
public sealed class SealedRunWorld : IDisposable
{
    private readonly Identity _alice = Identity.Generate();
    private readonly Identity _bob = Identity.Generate();
    private readonly Identity _mallory = Identity.Generate();
    private readonly Identity _issuer = Identity.Generate();
    private readonly Identity _rogue = Identity.Generate();

    public SealedRunWorld()
    {
        Directory = System.IO.Directory.CreateTempSubdirectory("tibet-sealed-run-").FullName;
        PlainModel = Support.Llama.SmallModel.Path;
        SealedModel = PathOf("small.sealed.gguf");
        ModelSealer.Seal(PlainModel, SealedModel, [_alice.Public], ClearanceLevel.Confidential, [_issuer.Public]);
        using (var model = Tibet.Core.Sealing.SealedModel.Open(SealedModel))
        {
            DataOffset = model.DataOffset;
            DataLength = model.DataPages * SealedModelKey.PageSize;
        }
        ScopedModel = PathOf("small.scoped.gguf");
        ModelSealer.Seal(PlainModel, ScopedModel, [_alice.Public], ClearanceLevel.Confidential, [_issuer.Public], scope: "models/llama");
        using (var scoped = Tibet.Core.Sealing.SealedModel.Open(ScopedModel))
            if (scoped.DataOffset != DataOffset)
                throw new InvalidOperationException($"the scoped model's data starts at {scoped.DataOffset}, not {DataOffset}: the tests read both at one offset");
        ExpectedLiveHash = PlainDataHash(PlainModel, DataLength);
        ExpectedDeadHash = Fnv1a(new byte[DataLength]);

        IdentityFile.WriteSecret(PathOf("alice.id"), _alice);
        IdentityFile.WriteSecret(PathOf("mallory.id"), _mallory);
        var now = DateTimeOffset.UtcNow;
        WriteClaim("valid", Claim.Issue(_issuer, _alice.Public, ClearanceLevel.Secret, now.AddDays(-1), now.AddDays(1)));
        WriteClaim("mallory", Claim.Issue(_issuer, _mallory.Public, ClearanceLevel.TopSecret, now.AddDays(-1), now.AddDays(1)));
        WriteClaim("expired", Claim.Issue(_issuer, _alice.Public, ClearanceLevel.Secret, now.AddDays(-2), now.AddDays(-1)));
        WriteClaim("not-yet-valid", Claim.Issue(_issuer, _alice.Public, ClearanceLevel.Secret, now.AddDays(1), now.AddDays(2)));
        WriteClaim("untrusted-issuer", Claim.Issue(_rogue, _alice.Public, ClearanceLevel.Secret, now.AddDays(-1), now.AddDays(1)));
        WriteClaim("subject-mismatch", Claim.Issue(_issuer, _bob.Public, ClearanceLevel.Secret, now.AddDays(-1), now.AddDays(1)));
        WriteClaim("scope-llama", Claim.Issue(_issuer, _alice.Public, ClearanceLevel.Secret, now.AddDays(-1), now.AddDays(1), ["models/llama"]));
        WriteClaim("scope-other", Claim.Issue(_issuer, _alice.Public, ClearanceLevel.Secret, now.AddDays(-1), now.AddDays(1), ["models/mistral"]));
        WriteClaim("clearance-too-low", Claim.Issue(_issuer, _alice.Public, ClearanceLevel.Restricted, now.AddDays(-1), now.AddDays(1)));
        byte[] forged = Claim.Issue(_issuer, _alice.Public, ClearanceLevel.Secret, now.AddDays(-1), now.AddDays(1)).Encode();
        forged[^5] ^= 0x01; // inside the signature
        if (!Claim.TryDecode(forged, out var forgedClaim, out _, out string problem))
            throw new InvalidOperationException("a claim with a flipped signature byte must still decode: " + problem);
        WriteClaim("forged", forgedClaim);

        Reader = NativeBuild.Compile("prog_sealed_read.c");
        _mediumSealed = new(() =>
        {
            string plain = Support.Llama.MediumModel.Path;
            string path = PathOf("medium.sealed.gguf");
            ModelSealer.Seal(plain, path, [_alice.Public], ClearanceLevel.Confidential, [_issuer.Public]);
            using var model = Tibet.Core.Sealing.SealedModel.Open(path);
            long length = model.DataPages * SealedModelKey.PageSize;
            byte[] data = PlainData(plain, length);
            string live = Fnv1a(data);
            // As prog_sealed_read's private-write mode: the first 16 pages of every 32.
            for (long at = 17; at < length; at += 4096)
                if (at / 4096 % 32 < 16)
                    data[at] ^= 0x5a;
            return new SealedFile(path, model.DataOffset, length, live, Fnv1a(data));
        });
    }

    private readonly Lazy<SealedFile> _mediumSealed;

    /// <summary>A sealed model, its data section, and the hash a live reader of that section sees.</summary>
    /// <param name="WrittenHash">What prog_sealed_read's private-write mode sees after its writes.</param>
    public sealed record SealedFile(string Path, long DataOffset, long DataLength, string LiveHash, string WrittenHash);

    /// <summary>The medium model (about 100 MB) sealed to alice at CONFIDENTIAL: many
    /// budgets' worth of pages (sealed on first use).</summary>
    public SealedFile MediumSealed => _mediumSealed.Value;

    public string Directory { get; }

    /// <summary>The plain small llama model (tibet-gguf-gen --preset small).</summary>
    public string PlainModel { get; }

    /// <summary>It, sealed to alice at CONFIDENTIAL.</summary>
    public string SealedModel { get; }

    /// <summary>The same model sealed with tibet.seal.scope = models/llama (same header size,
    /// so the same data offset and length).</summary>
    public string ScopedModel { get; }

    /// <summary>The sealed file's data section: its offset and its length in whole pages.</summary>
    public long DataOffset { get; }

    public long DataLength { get; }

    /// <summary>FNV-1a 64 of the plain data section (padded with zeros to whole pages),
    /// which a live reader of the sealed data section must see.</summary>
    public string ExpectedLiveHash { get; }

    /// <summary>FNV-1a 64 of as many zeros: dead material.</summary>
    public string ExpectedDeadHash { get; }

    /// <summary>prog_sealed_read (native/prog_sealed_read.c).</summary>
    public string Reader { get; }

    public string Alice => PathOf("alice.id");

    public string Mallory => PathOf("mallory.id");

    public string PathOf(string name) => Path.Combine(Directory, name);

    public string ClaimPath(string name) => PathOf(name + ".claim");

    /// <summary>A copy of the sealed model with one byte changed.</summary>
    public string TamperedCopy(string name, long offset, Func<byte, byte> change)
    {
        string path = PathOf(name);
        File.Copy(SealedModel, path, overwrite: true);
        using var file = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
        file.Position = offset;
        int original = file.ReadByte();
        file.Position = offset;
        file.WriteByte(change((byte)original));
        return path;
    }

    /// <summary>Runs the reader on <paramref name="model"/>'s data section under tibet-run
    /// with <paramref name="options"/>, writing to a fresh audit log.</summary>
    internal ReaderRun Read(string model, string mode, string[] options, string? auditLog = null)
    {
        auditLog ??= PathOf($"audit-{Guid.NewGuid():N}.jsonl");
        var result = TibetRun.Encrypted(["--audit-log", auditLog, "--threshold", "64K", "--budget", "256K", .. options],
            [Reader, model, DataOffset.ToString(CultureInfo.InvariantCulture), DataLength.ToString(CultureInfo.InvariantCulture), mode]);
        return new ReaderRun(result, ReadAudit(auditLog));
    }

    /// <summary>The audit log's records, oldest first (none when it was never written).</summary>
    public static IReadOnlyList<JsonElement> ReadAudit(string path) =>
        File.Exists(path)
            ? File.ReadAllLines(path).Select(line => JsonDocument.Parse(line).RootElement.Clone()).ToList()
            : [];

    public string AliceFingerprint => _alice.Fingerprint.ToString();

    /// <summary>The sealed model's data key, unwrapped here with Alice's identity and claim.</summary>
    public byte[] SealedModelDataKey
    {
        get
        {
            byte[] key = new byte[Tibet.Core.Sealing.SealFormat.DataKeySize];
            using var model = Tibet.Core.Sealing.SealedModel.Open(SealedModel);
            if (!Claim.TryDecode(ClaimFile.ReadAllBytes(ClaimPath("valid")), out var valid, out _, out string problem))
                throw new InvalidOperationException($"the valid claim does not decode: {problem}");
            using var decision = model.Decide(_alice, valid, DateTimeOffset.UtcNow, key);
            if (!decision.IsLive)
                throw new InvalidOperationException($"the test's own decision is not live: {decision}");
            return key;
        }
    }

    /// <summary>Alice's X25519 secret: what unwraps the data keys of models sealed to her.</summary>
    public byte[] AliceAgreementSecret
    {
        get
        {
            byte[] secrets = new byte[64];
            _alice.ExportSecrets(secrets);
            return secrets[..32];
        }
    }

    public void Dispose()
    {
        foreach (var identity in new[] { _alice, _bob, _mallory, _issuer, _rogue })
            identity.Dispose();
        System.IO.Directory.Delete(Directory, recursive: true);
    }

    private void WriteClaim(string name, Claim claim) => ClaimFile.Write(ClaimPath(name), claim);

    private static string PlainDataHash(string plainModel, long length) => Fnv1a(PlainData(plainModel, length));

    /// <summary>The plain model's data section, padded with zeros to <paramref name="length"/>.</summary>
    private static byte[] PlainData(string plainModel, long length)
    {
        GgufFile header;
        using (var stream = File.OpenRead(plainModel))
            header = GgufFile.Read(stream);
        byte[] data = new byte[length];
        byte[] file = File.ReadAllBytes(plainModel);
        int available = (int)Math.Min(length, file.Length - header.DataOffset);
        Array.Copy(file, header.DataOffset, data, 0, available);
        return data;
    }

    private static string Fnv1a(byte[] data)
    {
        ulong hash = 0xcbf29ce484222325UL;
        foreach (byte b in data)
            hash = (hash ^ b) * 0x100000001b3UL;
        return hash.ToString("x16", CultureInfo.InvariantCulture);
    }
}

/// <summary>What the reader printed, and the audit records of its run.</summary>
internal sealed record ReaderRun(TibetRun.Result Result, IReadOnlyList<JsonElement> Audit)
{
    /// <summary>"hash H nonzero N bytes B" → H, or null when the reader printed none.</summary>
    public string? Hash => Field("hash");

    public long? Nonzero => Field("nonzero") is { } n ? long.Parse(n, CultureInfo.InvariantCulture) : null;

    private string? Field(string name)
    {
        string? line = Result.Stdout.Split('\n').FirstOrDefault(l => l.StartsWith("hash ", StringComparison.Ordinal));
        if (line == null) return null;
        string[] words = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        int at = Array.IndexOf(words, name);
        return at >= 0 && at + 1 < words.Length ? words[at + 1] : null;
    }

    public override string ToString() => $"{Result}\naudit: {string.Join("\n", Audit)}";
}
