using Tibet.Core.Audit;
using Tibet.Core.Gguf;
using Tibet.Core.Identity;
using Tibet.Core.Sealing;
using Tibet.Fuzz.Targets;

namespace Tibet.Fuzz;

/// <summary>
/// Writes the seed corpora with tibet's own writers (GgufWriter, ModelSealer, Claim,
/// IdentityFile, AuditLog): small valid inputs, and a few near-valid ones (cut short, one
/// field changed) that start the fuzzer next to the checks. Each file stays a few KB,
/// because AFL++ mutates small inputs far faster. The committed corpora under
/// tests/fuzz/corpus were made by this class; run it again only to change them.
/// </summary>
internal static class SeedCorpus
{
    public static void WriteAll(string directory)
    {
        string scratch = Directory.CreateTempSubdirectory("tibet-fuzz-seeds-").FullName;
        try
        {
            WriteGguf(Path.Combine(directory, "gguf"));
            WriteSeal(Path.Combine(directory, "seal"), scratch);
            WriteClaims(Path.Combine(directory, "claim"));
            WriteIdentities(Path.Combine(directory, "identity"));
            WriteAudit(Path.Combine(directory, "audit"), scratch);
        }
        finally
        {
            Directory.Delete(scratch, recursive: true);
        }
    }

    private static void WriteGguf(string dir)
    {
        Directory.CreateDirectory(dir);
        byte[] small = Gguf(tensors: true, alignment: GgufFormat.DefaultAlignment);
        Save(dir, "small.gguf", small);
        Save(dir, "metadata-only.gguf", Gguf(tensors: false, alignment: GgufFormat.DefaultAlignment));
        Save(dir, "aligned-64.gguf", Gguf(tensors: true, alignment: 64));
        Save(dir, "near-truncated.gguf", small[..(small.Length * 2 / 3)]);
        Save(dir, "near-version-2.gguf", WithByte(small, 4, 2));
    }

    /// <summary>Every metadata type once (scalars, strings, arrays) and, optionally, two
    /// small tensors of different types.</summary>
    private static byte[] Gguf(bool tensors, uint alignment)
    {
        var writer = new GgufWriter(alignment);
        writer.Add("general.architecture", "llama");
        writer.Add("general.name", "fuzz seed ü");
        writer.Add("test.u8", (byte)7);
        writer.Add("test.i8", (sbyte)-7);
        writer.Add("test.u16", (ushort)700);
        writer.Add("test.i16", (short)-700);
        writer.Add("test.u32", 70000u);
        writer.Add("test.i32", -70000);
        writer.Add("test.u64", 7_000_000_000UL);
        writer.Add("test.i64", -7_000_000_000L);
        writer.Add("test.f32", 0.5f);
        writer.Add("test.f64", -0.25);
        writer.Add("test.bool", true);
        writer.AddArray("test.strings", ["a", "bc", ""]);
        writer.AddArray("test.ints", [1, 2, 3]);
        writer.AddArray("test.floats", [1f, 2f]);
        var data = new List<(GgufTensorInfo Tensor, byte[] Bytes)>();
        if (tensors)
        {
            var first = writer.AddTensor("token_embd.weight", GgmlType.F32, 4, 2);
            var second = writer.AddTensor("output.weight", GgmlType.Q8_0, 32);
            data.Add((first, Pattern(first.ByteSize)));
            data.Add((second, Pattern(second.ByteSize)));
        }
        using var output = new MemoryStream();
        writer.WriteHeader(output);
        foreach (var (tensor, bytes) in data)
            writer.WriteTensorData(output, tensor, bytes);
        return output.ToArray();
    }

    private static void WriteSeal(string dir, string scratch)
    {
        Directory.CreateDirectory(dir);
        var other = Identity.Generate();
        byte[] withTensor = Seal(scratch, "one-page", tensors: true, [FuzzKeys.Recipient.Public], scope: null);
        Save(dir, "one-page.sealed", withTensor);
        Save(dir, "no-tensors-scoped.sealed", Seal(scratch, "no-tensors", tensors: false, [FuzzKeys.Recipient.Public], FuzzKeys.Scope));
        Save(dir, "two-recipients.sealed", Seal(scratch, "two", tensors: false, [other.Public, FuzzKeys.Recipient.Public], scope: null));
        Save(dir, "near-truncated-trailer.sealed", withTensor[..^40]);
        Save(dir, "near-flipped-mac.sealed", WithByte(withTensor, withTensor.Length - 1, (byte)(withTensor[^1] ^ 1)));
    }

    private static byte[] Seal(string scratch, string name, bool tensors, IReadOnlyList<PublicIdentity> recipients, string? scope)
    {
        string plain = Path.Combine(scratch, name + ".gguf");
        string sealedPath = Path.Combine(scratch, name + ".sealed");
        var writer = new GgufWriter();
        writer.Add("general.architecture", "llama");
        GgufTensorInfo? tensor = tensors ? writer.AddTensor("w", GgmlType.F32, 16) : null;
        using (var output = File.Create(plain))
        {
            writer.WriteHeader(output);
            if (tensor is not null)
                writer.WriteTensorData(output, tensor, Pattern(tensor.ByteSize));
        }
        ModelSealer.Seal(plain, sealedPath, recipients, ClearanceLevel.Secret, [FuzzKeys.Issuer.Public], scope: scope);
        return File.ReadAllBytes(sealedPath);
    }

    private static void WriteClaims(string dir)
    {
        Directory.CreateDirectory(dir);
        var claim = FuzzKeys.Claim;
        Save(dir, "valid.claim.bin", claim.Encode());
        Save(dir, "valid.claim", claim.ToArmoredText());
        var scoped = Claim.Issue(FuzzKeys.Issuer, FuzzKeys.Recipient.Public, ClearanceLevel.Secret, FuzzKeys.NotBefore, FuzzKeys.Expires,
            [FuzzKeys.Scope, "a", "z/other@x+y-1.2_3"], issuedAt: FuzzKeys.NotBefore);
        Save(dir, "scoped.claim.bin", scoped.Encode());
        var expired = Claim.Issue(FuzzKeys.Issuer, FuzzKeys.Recipient.Public, ClearanceLevel.TopSecret, FuzzKeys.NotBefore,
            FuzzKeys.NotBefore.AddDays(1), issuedAt: FuzzKeys.NotBefore);
        Save(dir, "expired.claim.bin", expired.Encode());
        var untrusted = Claim.Issue(FuzzKeys.Recipient, FuzzKeys.Recipient.Public, ClearanceLevel.TopSecret, FuzzKeys.NotBefore,
            FuzzKeys.Expires, issuedAt: FuzzKeys.NotBefore);
        Save(dir, "self-issued.claim.bin", untrusted.Encode());
        byte[] binary = claim.Encode();
        Save(dir, "near-bad-signature.claim.bin", WithByte(binary, binary.Length - 1, (byte)(binary[^1] ^ 0x80)));
    }

    private static void WriteIdentities(string dir)
    {
        Directory.CreateDirectory(dir);
        var identity = FuzzKeys.Recipient;
        byte[] secretText = IdentityFile.EncodeSecret(identity, passphrase: null, cost: null);
        Save(dir, "secret.id", secretText);
        using (var passphrase = Passphrase.FromChars("fuzz"))
            Save(dir, "protected.id", IdentityFile.EncodeSecret(identity, passphrase, new Argon2Cost(Argon2Cost.MinMemoryKiB, Argon2Cost.MinPasses)));
        Save(dir, "public.pub", IdentityFile.EncodePublic(identity.Public));
        Save(dir, "public.bin", identity.Public.Encode());
        Save(dir, "secret.bin", SecretIdentityFormat.Encode(identity, passphrase: null, Argon2Cost.Default));
        Save(dir, "near-cut-armor.id", secretText[..(secretText.Length - 30)]);
    }

    private static void WriteAudit(string dir, string scratch)
    {
        Directory.CreateDirectory(dir);
        string path = Path.Combine(scratch, "audit.jsonl");
        var log = new AuditLog(path);
        log.Append(new AuditEntry { Object = "/models/a.sealed", Decision = AuditDecision.Denied, Reason = "NoClaim: no claim was given", Program = "/usr/bin/llama-cli" });
        Save(dir, "one-line.jsonl", File.ReadAllBytes(path));
        log.Append(new AuditEntry
        {
            Object = "/models/a.sealed", Decision = AuditDecision.Granted, Reason = "Live: \"quoted\"\ttab é",
            Identity = FuzzKeys.Recipient.Public.Fingerprint, Program = "/usr/bin/llama-cli",
        });
        log.Append(new AuditEntry { Object = "arena", Decision = AuditDecision.Denied, Reason = "x", Program = "p" });
        byte[] three = File.ReadAllBytes(path);
        Save(dir, "three-lines.jsonl", three);
        Save(dir, "near-no-final-newline.jsonl", three[..^1]);
        int secondLine = Array.IndexOf(three, (byte)'\n') + 1;
        Save(dir, "near-edited-line.jsonl", WithByte(three, secondLine + 10, (byte)'9'));
    }

    private static byte[] Pattern(long length)
    {
        var bytes = new byte[length];
        for (int i = 0; i < bytes.Length; i++)
            bytes[i] = (byte)(i * 7 + 1);
        return bytes;
    }

    private static byte[] WithByte(byte[] bytes, int index, byte value)
    {
        byte[] copy = (byte[])bytes.Clone();
        copy[index] = value;
        return copy;
    }

    private static void Save(string dir, string name, byte[] bytes)
    {
        File.WriteAllBytes(Path.Combine(dir, name), bytes);
        Console.WriteLine($"{Path.Combine(dir, name)}: {bytes.Length} bytes");
    }
}
