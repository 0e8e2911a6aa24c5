using Tibet.Core.Gguf;
using Tibet.Core.Identity;
using Tibet.Core.Sealing;

namespace Tibet.IntegrationTests.Sealing;

// Beside Tibet.IntegrationTests.Identity, the bare name Identity means that namespace.
using Identity = Tibet.Core.Identity.Identity;

/// <summary>
/// The cast of the sealing tests, and a scratch directory they write into: two recipients
/// (alice, bob), an outsider (mallory), the trusted issuer and a rogue one, plus claim
/// factories. Dispose removes the directory and wipes the identities.
/// </summary>
internal sealed class SealingWorld : IDisposable
{
    public static readonly DateTimeOffset Now = new(2030, 6, 1, 12, 0, 0, TimeSpan.Zero);

    public SealingWorld()
    {
        Directory = System.IO.Directory.CreateTempSubdirectory("tibet-sealing-").FullName;
    }

    public string Directory { get; }

    public Identity Alice { get; } = Identity.Generate();
    public Identity Bob { get; } = Identity.Generate();
    public Identity Mallory { get; } = Identity.Generate();
    public Identity Issuer { get; } = Identity.Generate();
    public Identity RogueIssuer { get; } = Identity.Generate();

    public string PathOf(string name) => Path.Combine(Directory, name);

    /// <summary>A claim by the trusted issuer, in force from a day before <see cref="Now"/>
    /// to a day after unless told otherwise.</summary>
    public Claim ClaimFor(Identity subject, ClearanceLevel clearance = ClearanceLevel.Secret, Identity? issuer = null,
        DateTimeOffset? notBefore = null, DateTimeOffset? expires = null) =>
        Claim.Issue(issuer ?? Issuer, subject.Public, clearance, notBefore ?? Now.AddDays(-1), expires ?? Now.AddDays(1), issuedAt: Now.AddDays(-1));

    /// <summary>Seals <paramref name="plainPath"/> to alice and bob at <paramref name="clearance"/>,
    /// trusting <see cref="Issuer"/>.</summary>
    public string Seal(string plainPath, ClearanceLevel clearance = ClearanceLevel.Secret, string? name = null)
    {
        string sealedPath = PathOf(name ?? Path.GetFileNameWithoutExtension(plainPath) + $".sealed-{Guid.NewGuid():N}.gguf");
        ModelSealer.Seal(plainPath, sealedPath, [Alice.Public, Bob.Public], clearance, [Issuer.Public]);
        return sealedPath;
    }

    public void Dispose()
    {
        foreach (var identity in new[] { Alice, Bob, Mallory, Issuer, RogueIssuer })
            identity.Dispose();
        System.IO.Directory.Delete(Directory, recursive: true);
    }
}

/// <summary>A plain GGUF written for a test, with the exact bytes of every tensor.</summary>
internal sealed class PlainModel
{
    private PlainModel(string path, GgufFile header, Dictionary<string, byte[]> tensorData)
    {
        Path = path;
        Header = header;
        TensorData = tensorData;
    }

    public string Path { get; }

    public GgufFile Header { get; }

    public IReadOnlyDictionary<string, byte[]> TensorData { get; }

    /// <summary>The data section as the sealer sees it: [0, last tensor end), padding
    /// between tensors as zeros, which is what GgufWriter writes.</summary>
    public byte[] DataSection()
    {
        var last = Header.Tensors[^1];
        var data = new byte[last.Offset + last.ByteSize];
        foreach (var tensor in Header.Tensors)
            TensorData[tensor.Name].CopyTo(data, tensor.Offset);
        return data;
    }

    /// <summary>
    /// A llama-flavoured model with seeded random weights in several ggml types; the
    /// data section's last page is partial. <paramref name="scale"/> multiplies the size
    /// of the big F32 tensor (scale 1 gives about 4 pages of data).
    /// </summary>
    public static PlainModel Write(string path, int seed = 1, int scale = 1, uint alignment = GgufFormat.DefaultAlignment)
    {
        var random = new Random(seed);
        var writer = new GgufWriter(alignment);
        writer.Add("general.architecture", "llama");
        writer.Add("general.name", "tiny sealed test model");
        writer.Add("llama.context_length", 256u);
        writer.Add("llama.embedding_length", 64u);
        writer.Add("llama.rope.freq_base", 10000f);
        writer.AddArray("tokenizer.ggml.tokens", ["<unk>", "<s>", "</s>", "a", "b", "c", "▁the"]);
        writer.AddArray("tokenizer.ggml.scores", new float[] { 0, 0, 0, -1, -2, -3, -4 });

        var shapes = new (string Name, GgmlType Type, long[] Dimensions)[]
        {
            ("token_embd.weight", GgmlType.F32, [64, 33L * scale]),
            ("blk.0.attn_norm.weight", GgmlType.F16, [300]),
            ("blk.0.attn_q.weight", GgmlType.Q8_0, [32 * 10]),
            ("blk.0.ffn_up.weight", GgmlType.Q4_K, [256 * 3]),
            ("output.weight", GgmlType.I32, [1001]),
        };
        var tensorData = new Dictionary<string, byte[]>();
        var tensors = shapes.Select(shape => writer.AddTensor(shape.Name, shape.Type, shape.Dimensions)).ToList();
        using (var output = new FileStream(path, FileMode.CreateNew, FileAccess.Write))
        {
            writer.WriteHeader(output);
            foreach (var tensor in tensors)
            {
                var data = new byte[tensor.ByteSize];
                random.NextBytes(data);
                writer.WriteTensorData(output, tensor, data);
                tensorData.Add(tensor.Name, data);
            }
        }
        return new PlainModel(path, GgufFile.Read(path), tensorData);
    }
}
