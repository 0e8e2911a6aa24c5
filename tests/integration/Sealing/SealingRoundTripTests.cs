using Tibet.Core.Gguf;
using Tibet.Core.Identity;
using Tibet.Core.Sealing;
using Xunit;

namespace Tibet.IntegrationTests.Sealing;

/// <summary>A sealed model is an ordinary GGUF file that holds none of the model's
/// bytes, and unsealing gives back exactly the model that was sealed.</summary>
public sealed class SealingRoundTripTests : IDisposable
{
    private readonly SealingWorld _world = new();

    public void Dispose() => _world.Dispose();

    [Fact]
    public void A_sealed_model_is_a_valid_gguf_file_with_the_same_metadata_and_tensor_table()
    {
        var plain = PlainModel.Write(_world.PathOf("plain.gguf"));
        string sealedPath = _world.Seal(plain.Path, ClearanceLevel.Confidential);

        var header = GgufFile.Read(sealedPath);

        Assert.Equal(0, header.DataOffset % SealedModel.PageSize);
        Assert.Equal(plain.Header.Alignment, header.Alignment);
        var originalKeys = plain.Header.Metadata.Select(entry => entry.Key).ToList();
        Assert.Equal(originalKeys, header.Metadata.Select(entry => entry.Key).Take(originalKeys.Count));
        foreach (var entry in plain.Header.Metadata)
            Assert.Equal(entry.Value.ToString(), header.Metadata[entry.Key].ToString());
        Assert.Equal(
            ["tibet.seal.version", "tibet.seal.file_id", "tibet.seal.clearance", "tibet.seal.issuers", "tibet.seal.recipients",
             "tibet.seal.data_pages", "tibet.seal.trailer_offset", GgufWriter.HeaderPaddingKey],
            header.Metadata.Select(entry => entry.Key).Skip(originalKeys.Count));
        Assert.Equal(1u, header.Metadata.GetUInt32("tibet.seal.version"));
        Assert.Equal("CONFIDENTIAL", header.Metadata.GetString("tibet.seal.clearance"));
        Assert.Equal([_world.Alice.Fingerprint.ToString(), _world.Bob.Fingerprint.ToString()], header.Metadata.GetStringArray("tibet.seal.recipients"));
        Assert.Equal([Convert.ToHexStringLower(_world.Issuer.Public.Encode())], header.Metadata.GetStringArray("tibet.seal.issuers"));

        Assert.Equal(plain.Header.Tensors.Count, header.Tensors.Count);
        for (int i = 0; i < header.Tensors.Count; i++)
        {
            var (original, copy) = (plain.Header.Tensors[i], header.Tensors[i]);
            Assert.Equal((original.Name, original.Type, original.Offset, original.ByteSize), (copy.Name, copy.Type, copy.Offset, copy.ByteSize));
            Assert.Equal(original.Dimensions, copy.Dimensions);
        }

        using var model = SealedModel.Open(sealedPath);
        long dataBytes = plain.DataSection().Length;
        Assert.True(dataBytes % SealedModel.PageSize != 0, "the test model should end in a partial page");
        Assert.Equal((dataBytes + SealedModel.PageSize - 1) / SealedModel.PageSize, model.DataPages);
        Assert.Equal(header.Metadata.GetUInt64("tibet.seal.data_pages"), (ulong)model.DataPages);
        Assert.Equal(header.Metadata.GetUInt64("tibet.seal.trailer_offset"), (ulong)model.TrailerOffset);
        Assert.Equal(model.DataOffset + model.DataPages * SealedModel.PageSize, model.TrailerOffset);
        Assert.Equal(ClearanceLevel.Confidential, model.Requirements.Clearance);
        Assert.Equal([_world.Issuer.Public], model.Requirements.TrustedIssuers);
        Assert.Equal([_world.Alice.Fingerprint, _world.Bob.Fingerprint], model.Requirements.Recipients);
        Assert.Equal(2, model.WrappedKeyCount);
    }

    [Fact]
    public void The_sealed_file_contains_no_16_byte_window_of_any_tensor()
    {
        var plain = PlainModel.Write(_world.PathOf("plain.gguf"), seed: 7, scale: 8);
        byte[] sealedFile = File.ReadAllBytes(_world.Seal(plain.Path));

        // Every 16-byte window of the sealed file, at every offset.
        var sealedWindows = new HashSet<UInt128>();
        for (int at = 0; at + 16 <= sealedFile.Length; at++)
            sealedWindows.Add(BitConverter.ToUInt128(sealedFile, at));

        // Every 16-byte window of every tensor, at every offset: not one may appear.
        long checkedWindows = 0;
        foreach (var (name, data) in plain.TensorData)
        {
            for (int at = 0; at + 16 <= data.Length; at++, checkedWindows++)
                Assert.False(sealedWindows.Contains(BitConverter.ToUInt128(data, at)), $"tensor '{name}' bytes {at}..{at + 16} appear in the sealed file");
        }
        Assert.True(checkedWindows > 50_000);

        // The check has teeth: the plain file's windows are found.
        byte[] plainFile = File.ReadAllBytes(plain.Path);
        var tensor = plain.Header.Tensors[0];
        Assert.Equal(plain.TensorData[tensor.Name].AsSpan(100, 16).ToArray(), plainFile.AsSpan((int)(plain.Header.DataOffset + tensor.Offset + 100), 16).ToArray());
    }

    [Theory]
    [InlineData(1, 1, GgufFormat.DefaultAlignment)]
    [InlineData(2, 5, 64u)]
    [InlineData(3, 2, 8192u)]
    public void Unsealing_gives_back_the_metadata_and_byte_identical_tensor_data(int seed, int scale, uint alignment)
    {
        var plain = PlainModel.Write(_world.PathOf("plain.gguf"), seed, scale, alignment);
        string sealedPath = _world.Seal(plain.Path);
        string unsealedPath = _world.PathOf("unsealed.gguf");

        using (var model = SealedModel.Open(sealedPath))
        using (var decision = model.Decide(_world.Alice, _world.ClaimFor(_world.Alice), SealingWorld.Now))
        {
            Assert.True(decision.IsLive, decision.ToString());
            var reports = new List<long>();
            ModelUnsealer.Unseal(model, decision.Key, unsealedPath, new SynchronousProgress(reports.Add));
            Assert.Equal(model.DataPages * SealedModel.PageSize, reports[^1]);
        }

        var unsealed = GgufFile.Read(unsealedPath);
        Assert.Equal(plain.Header.Alignment, unsealed.Alignment);
        Assert.Equal(plain.Header.Metadata.Select(entry => (entry.Key, entry.Value.ToString())),
            unsealed.Metadata.Select(entry => (entry.Key, entry.Value.ToString())));
        byte[] unsealedFile = File.ReadAllBytes(unsealedPath);
        foreach (var tensor in unsealed.Tensors)
            Assert.Equal(plain.TensorData[tensor.Name], unsealedFile.AsSpan((int)unsealed.FileOffsetOf(tensor), (int)tensor.ByteSize).ToArray());
        // GgufWriter wrote the plain model, so the whole file comes back byte for byte.
        Assert.Equal(File.ReadAllBytes(plain.Path), unsealedFile);
        if (OperatingSystem.IsLinux())
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(unsealedPath));
    }

    [Fact]
    public void Every_page_decrypts_to_the_original_data_section_padded_with_zeros()
    {
        var plain = PlainModel.Write(_world.PathOf("plain.gguf"), scale: 3);
        string sealedPath = _world.Seal(plain.Path);
        var sealedFile = new SealedBytes(sealedPath);
        byte[] expected = new byte[sealedFile.DataPages * SealedModel.PageSize];
        plain.DataSection().CopyTo(expected, 0);

        using var model = SealedModel.Open(sealedPath);
        using var decision = model.Decide(_world.Bob, _world.ClaimFor(_world.Bob), SealingWorld.Now);
        Assert.True(decision.IsLive, decision.ToString());
        var plaintext = new byte[SealedModel.PageSize];
        for (long page = 0; page < sealedFile.DataPages; page++)
        {
            Assert.True(decision.Key.TryDecryptPage(page, sealedFile.CiphertextPage(page), plaintext), $"page {page}");
            Assert.Equal(expected.AsSpan((int)(page * SealedModel.PageSize), SealedModel.PageSize).ToArray(), plaintext);
        }
    }

    [Fact]
    public void Two_seals_of_one_model_have_different_file_ids_wrapped_keys_and_ciphertext()
    {
        var plain = PlainModel.Write(_world.PathOf("plain.gguf"));
        var first = new SealedBytes(_world.Seal(plain.Path));
        var second = new SealedBytes(_world.Seal(plain.Path));
        using var firstModel = SealedBytes.Open(first.Bytes);
        using var secondModel = SealedBytes.Open(second.Bytes);

        Assert.NotEqual(firstModel.Requirements.FileIdHex, secondModel.Requirements.FileIdHex);
        for (int i = 0; i < 2; i++)
            Assert.NotEqual(first.Bytes.AsSpan((int)first.WrappedKeys[i].Offset, first.WrappedKeys[i].Length).ToArray(),
                second.Bytes.AsSpan((int)second.WrappedKeys[i].Offset, second.WrappedKeys[i].Length).ToArray());
        // GCM's ciphertext is plaintext XOR a keystream that depends on the key and nonce
        // only (the associated data affects just the tag). Page i of both seals has the
        // same plaintext and the same nonce, so equal bytes would mean an equal data key,
        // and a reused keystream. Different bytes on every page prove fresh keys.
        for (long page = 0; page < first.DataPages; page++)
            Assert.NotEqual(first.CiphertextPage(page).ToArray(), second.CiphertextPage(page).ToArray());
    }

    [Fact]
    public void A_model_without_tensors_seals_to_zero_pages_and_unseals()
    {
        var writer = new GgufWriter();
        writer.Add("general.architecture", "llama");
        string plainPath = _world.PathOf("empty.gguf");
        using (var output = File.Create(plainPath))
            writer.WriteHeader(output);
        string sealedPath = _world.Seal(plainPath);

        using var model = SealedModel.Open(sealedPath);
        Assert.Equal(0, model.DataPages);
        Assert.Equal(model.DataOffset, model.TrailerOffset);
        using var decision = model.Decide(_world.Alice, _world.ClaimFor(_world.Alice), SealingWorld.Now);
        Assert.True(decision.IsLive, decision.ToString());
        ModelUnsealer.Unseal(model, decision.Key, _world.PathOf("empty.unsealed.gguf"));
        Assert.Equal(File.ReadAllBytes(plainPath), File.ReadAllBytes(_world.PathOf("empty.unsealed.gguf")));
    }

    [Fact]
    public void Sealing_a_sealed_model_is_refused()
    {
        var plain = PlainModel.Write(_world.PathOf("plain.gguf"));
        string sealedPath = _world.Seal(plain.Path);

        var error = Assert.Throws<SealedModelException>(() => _world.Seal(sealedPath, name: "twice.gguf"));

        Assert.Equal(SealAccessReason.AlreadySealed, error.Reason);
        Assert.Contains("already sealed", error.Message);
        Assert.False(File.Exists(_world.PathOf("twice.gguf")));
    }

    [Fact]
    public void A_failure_while_sealing_leaves_neither_the_output_nor_a_temporary_file()
    {
        var plain = PlainModel.Write(_world.PathOf("plain.gguf"), scale: 20);
        string sealedPath = _world.PathOf("interrupted.gguf");
        var failing = new SynchronousProgress(bytes => throw new IOException("disk full (simulated)"));

        Assert.Throws<IOException>(() =>
            ModelSealer.Seal(plain.Path, sealedPath, [_world.Alice.Public], ClearanceLevel.Secret, [_world.Issuer.Public], failing));

        Assert.Equal([plain.Path], Directory.GetFiles(_world.Directory));
    }

    [Fact]
    public void Sealing_refuses_an_existing_output_missing_or_repeated_identities_and_the_input_as_output()
    {
        var plain = PlainModel.Write(_world.PathOf("plain.gguf"));
        string existing = _world.PathOf("existing.gguf");
        File.WriteAllText(existing, "keep me");
        PublicIdentity[] alice = [_world.Alice.Public], issuer = [_world.Issuer.Public];

        Assert.Throws<IOException>(() => ModelSealer.Seal(plain.Path, existing, alice, ClearanceLevel.Secret, issuer));
        Assert.Equal("keep me", File.ReadAllText(existing));
        Assert.Throws<ArgumentException>(() => ModelSealer.Seal(plain.Path, _world.PathOf("a.gguf"), [], ClearanceLevel.Secret, issuer));
        Assert.Throws<ArgumentException>(() => ModelSealer.Seal(plain.Path, _world.PathOf("a.gguf"), alice, ClearanceLevel.Secret, []));
        Assert.Throws<ArgumentException>(() => ModelSealer.Seal(plain.Path, _world.PathOf("a.gguf"), [_world.Alice.Public, _world.Alice.Public], ClearanceLevel.Secret, issuer));
        Assert.Throws<ArgumentException>(() => ModelSealer.Seal(plain.Path, _world.PathOf("a.gguf"), alice, (ClearanceLevel)9, issuer));
        Assert.Throws<ArgumentException>(() => ModelSealer.Seal(plain.Path, plain.Path, alice, ClearanceLevel.Secret, issuer));
        Assert.False(File.Exists(_world.PathOf("a.gguf")));
    }

    /// <summary>Progress&lt;T&gt; posts to the thread pool; tests need the calls in order, now.</summary>
    internal sealed class SynchronousProgress(Action<long> report) : IProgress<long>
    {
        public void Report(long value) => report(value);
    }
}
