using System.Buffers.Binary;
using System.Security.Cryptography;
using Microsoft.Win32.SafeHandles;
using NSec.Cryptography;
using Tibet.Core.Crypto;
using Tibet.Core.Gguf;
using Tibet.Core.Identity;

namespace Tibet.Core.Sealing;

/// <summary>
/// Seals a plain GGUF model: the result is still a valid GGUF file whose metadata and
/// tensor table any reader sees, but whose data section is AES-256-GCM ciphertext that
/// only the recipients can decrypt, and only with a claim from a trusted issuer of at
/// least the given clearance. The format is specified in src/Core/Sealing/README.md.
/// </summary>
public static class ModelSealer
{
    // Pages encrypted per read/write round: 1 MiB, large enough for the disk to stream,
    // small enough that a model of any size is sealed in bounded memory.
    private const int ChunkPages = 256;

    /// <summary>
    /// Seals <paramref name="input"/> into <paramref name="output"/>, which must not exist
    /// yet. Streams with about 2 MiB of buffers whatever the model's size, and writes to a
    /// temporary file renamed into place at the end, so a failure leaves no output.
    /// Every call draws a fresh data key and file id.
    /// </summary>
    /// <param name="recipients">The identities that may open the model (at least one; each once).</param>
    /// <param name="clearance">The lowest clearance a claim must grant.</param>
    /// <param name="issuers">The issuers whose claims are accepted (at least one; each once).</param>
    /// <param name="progress">Receives the data bytes sealed so far, up to <see cref="SealedDataBytes"/>.</param>
    /// <param name="scope">When given, only claims that cover this scope open the model
    /// (a claim without scopes covers every scope).</param>
    /// <exception cref="SealedModelException">The input is not a GGUF model (MalformedModel)
    /// or is already sealed (AlreadySealed).</exception>
    /// <exception cref="ArgumentException">Missing or repeated recipients or issuers, an
    /// undefined clearance, or the output naming the input.</exception>
    /// <exception cref="IOException">The output exists, or a file cannot be read or written.</exception>
    public static SealResult Seal(string input, string output, IReadOnlyList<PublicIdentity> recipients, ClearanceLevel clearance,
        IReadOnlyList<PublicIdentity> issuers, IProgress<long>? progress = null, string? scope = null)
    {
        if (scope != null && !Claim.IsValidScope(scope))
            throw new ArgumentException($"'{scope}' is not a scope; use 1..{Claim.MaxScopeLength} characters of A-Z a-z 0-9 . _ : / @ + -.", nameof(scope));
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(output);
        RequireDistinct(recipients, nameof(recipients), "recipient", SealFormat.MaxRecipients, "Name every identity that may open the model, each once.");
        RequireDistinct(issuers, nameof(issuers), "issuer", SealFormat.MaxIssuers, "Name every trusted claim issuer, each once.");
        if (!ClearanceLevelNames.IsDefined(clearance))
            throw new ArgumentException($"{(byte)clearance} is not a clearance level; use one of {ClearanceLevelNames.Syntax}.", nameof(clearance));
        if (string.Equals(Path.GetFullPath(input), Path.GetFullPath(output), StringComparison.Ordinal))
            throw new ArgumentException($"The output '{output}' is the input model itself; write the sealed model to a new file.", nameof(output));

        using var inputStream = new FileStream(input, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0);
        GgufFile model = ReadPlainModel(inputStream, input);
        long dataBytes = SealFormat.DataExtentOf(model);
        long dataPages = SealFormat.PagesFor(dataBytes);

        byte[] fileId = new byte[SealFormat.FileIdSize];
        SecureRandom.Fill(fileId);
        Span<byte> dataKeyBytes = stackalloc byte[SealFormat.DataKeySize];
        try
        {
            SecureRandom.Fill(dataKeyBytes);
            byte[] trailerPrefix = BuildTrailerPrefix(recipients, dataKeyBytes, fileId);
            using Key dataKey = SealFormat.ImportDataKey(dataKeyBytes);
            using Key macKey = SealFormat.DeriveMacKey(dataKeyBytes, fileId);
            CryptographicOperations.ZeroMemory(dataKeyBytes);

            var writer = BuildSealedHeader(model, fileId, clearance, scope, issuers, recipients, dataPages, input);
            long dataOffset = writer.DataOffset;
            long trailerOffset = dataOffset + dataPages * SealFormat.PageSize;
            long tagTableOffset = trailerOffset + trailerPrefix.Length;
            long outputLength = tagTableOffset + dataPages * SealFormat.TagSize + SealFormat.MacSize;

            using var outputFile = AtomicOutputFile.Create(output, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
            byte[] headerHash = new byte[SealFormat.HeaderHashSize];
            var hashing = new HashingWriteStream(outputFile.Stream);
            writer.WriteHeader(hashing);
            hashing.Flush();
            hashing.FinishHash(headerHash);
            if (hashing.Length != dataOffset)
                throw new InvalidOperationException($"The sealed header came out {hashing.Length} bytes long, but the writer laid it out as {dataOffset}.");

            IncrementalMac.Initialize(macKey, out var mac);
            IncrementalMac.Update(ref mac, headerHash);
            IncrementalMac.Update(ref mac, trailerPrefix);
            var pages = new PageRange(model.DataOffset, dataBytes, dataPages, dataOffset, tagTableOffset);
            EncryptDataSection(inputStream.SafeFileHandle, outputFile.Stream.SafeFileHandle, pages, dataKey, fileId, headerHash, ref mac, progress, input);

            SafeFileHandle outputHandle = outputFile.Stream.SafeFileHandle;
            RandomAccess.Write(outputHandle, trailerPrefix, trailerOffset);
            Span<byte> macBytes = stackalloc byte[SealFormat.MacSize];
            IncrementalMac.Finalize(ref mac, macBytes);
            RandomAccess.Write(outputHandle, macBytes, outputLength - SealFormat.MacSize);
            outputFile.Commit();
            return new SealResult(Convert.ToHexStringLower(fileId), dataPages, dataBytes, outputLength);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(dataKeyBytes);
        }
    }

    /// <summary>The bytes <see cref="Seal"/>'s progress reaches at the end for this model:
    /// its data section rounded up to whole pages.</summary>
    public static long SealedDataBytes(GgufFile model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return SealFormat.PagesFor(SealFormat.DataExtentOf(model)) * SealFormat.PageSize;
    }

    /// <summary>Where the data section lies in the input and the output.</summary>
    private readonly record struct PageRange(long InputDataOffset, long DataBytes, long Pages, long OutputDataOffset, long TagTableOffset);

    private static GgufFile ReadPlainModel(FileStream stream, string path)
    {
        GgufFile model;
        try
        {
            model = GgufFile.Read(stream);
        }
        catch (GgufFormatException e)
        {
            throw new SealedModelException(SealAccessReason.MalformedModel,
                $"'{path}' is not a GGUF model tibet can seal ({SealedModel.OneLine(e.Message)}); check that you named the right file.", e);
        }
        if (SealHeader.IsSealed(model))
            throw new SealedModelException(SealAccessReason.AlreadySealed,
                $"'{path}' is already sealed (it has {SealFormat.KeyPrefix}* metadata); seal the original plain model instead.");
        if (model.Alignment > GgufWriter.MaxDataSectionAlignment)
            throw new SealedModelException(SealAccessReason.MalformedModel,
                $"'{path}' aligns its tensors to {model.Alignment} bytes, more than the {GgufWriter.MaxDataSectionAlignment} tibet can seal.");
        return model;
    }

    /// <summary>"TIBETSL1" ‖ u32 count ‖ for each recipient, u32 length ‖ the data key wrapped to it.</summary>
    private static byte[] BuildTrailerPrefix(IReadOnlyList<PublicIdentity> recipients, ReadOnlySpan<byte> dataKey, byte[] fileId)
    {
        byte[] context = SealFormat.KeyWrapContext(fileId);
        var prefix = new MemoryStream();
        prefix.Write(SealFormat.TrailerMagic);
        Span<byte> field = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(field, (uint)recipients.Count);
        prefix.Write(field);
        foreach (var recipient in recipients)
        {
            byte[] wrapped = KeyWrap.Wrap(recipient, dataKey, context);
            BinaryPrimitives.WriteUInt32LittleEndian(field, (uint)wrapped.Length);
            prefix.Write(field);
            prefix.Write(wrapped);
        }
        return prefix.ToArray();
    }

    /// <summary>The sealed header: the model's metadata in order, the tibet.seal.* keys,
    /// the same tensors at the same offsets, and padding that starts the data section on
    /// a page boundary.</summary>
    private static GgufWriter BuildSealedHeader(GgufFile model, byte[] fileId, ClearanceLevel clearance, string? scope,
        IReadOnlyList<PublicIdentity> issuers, IReadOnlyList<PublicIdentity> recipients, long dataPages, string path)
    {
        // The trailer offset depends on where the data section starts, which depends on
        // the header's length; the offset is a fixed-size uint64, so a first layout with a
        // placeholder gives the length, and the second layout is the same length.
        var placeholder = Build(0);
        long trailerOffset = placeholder.DataOffset + dataPages * SealFormat.PageSize;
        var writer = Build(trailerOffset);
        if (writer.DataOffset != placeholder.DataOffset)
            throw new InvalidOperationException("The sealed header changed length when its trailer offset was filled in.");
        return writer;

        GgufWriter Build(long trailerOffsetValue)
        {
            var writer = new GgufWriter(model.Alignment) { DataSectionAlignment = Math.Max(SealFormat.PageSize, model.Alignment) };
            try
            {
                foreach (var entry in model.Metadata)
                {
                    // The writer derives these two from its own settings.
                    if (entry.Key is GgufFormat.AlignmentKey or GgufWriter.HeaderPaddingKey)
                        continue;
                    writer.Add(entry.Key, entry.Value);
                }
                writer.Add(SealFormat.VersionKey, SealFormat.Version);
                writer.Add(SealFormat.FileIdKey, Convert.ToHexStringLower(fileId));
                writer.Add(SealFormat.ClearanceKey, ClearanceLevelNames.ToName(clearance));
                if (scope != null)
                    writer.Add(SealFormat.ScopeKey, scope);
                writer.AddArray(SealFormat.IssuersKey, issuers.Select(issuer => Convert.ToHexStringLower(issuer.Encode())).ToArray());
                writer.AddArray(SealFormat.RecipientsKey, recipients.Select(recipient => recipient.Fingerprint.ToString()).ToArray());
                writer.Add(SealFormat.DataPagesKey, (ulong)dataPages);
                writer.Add(SealFormat.TrailerOffsetKey, (ulong)trailerOffsetValue);
            }
            catch (ArgumentException e)
            {
                throw new SealedModelException(SealAccessReason.MalformedModel,
                    $"'{path}' cannot be sealed: its metadata leaves no room for the seal ({e.Message.TrimEnd('.')}).", e);
            }
            foreach (var tensor in model.Tensors)
            {
                var copy = writer.AddTensor(tensor.Name, tensor.Type, tensor.Dimensions.ToArray());
                if (copy.Offset != tensor.Offset)
                    throw new InvalidOperationException(
                        $"Tensor '{tensor.Name}' landed at data offset {copy.Offset} in the sealed header instead of {tensor.Offset}.");
            }
            return writer;
        }
    }

    private static void EncryptDataSection(SafeFileHandle input, SafeFileHandle output, PageRange pages, Key dataKey,
        byte[] fileId, byte[] headerHash, ref IncrementalMac mac, IProgress<long>? progress, string inputPath)
    {
        const int ChunkBytes = ChunkPages * SealFormat.PageSize;
        // Pinned, so the collector never leaves copies of model plaintext around the heap.
        byte[] plaintext = GC.AllocateArray<byte>(ChunkBytes, pinned: true);
        byte[] ciphertext = new byte[ChunkBytes];
        byte[] tags = new byte[ChunkPages * SealFormat.TagSize];
        byte[] aadTemplate = new byte[SealFormat.AadSize];
        SealFormat.WriteAadTemplate(aadTemplate, fileId, headerHash);
        try
        {
            for (long firstPage = 0; firstPage < pages.Pages; firstPage += ChunkPages)
            {
                int count = (int)Math.Min(ChunkPages, pages.Pages - firstPage);
                long dataPosition = firstPage * SealFormat.PageSize;
                int chunkBytes = count * SealFormat.PageSize;
                int modelBytes = (int)Math.Min(chunkBytes, pages.DataBytes - dataPosition);
                ReadFully(input, plaintext.AsSpan(0, modelBytes), pages.InputDataOffset + dataPosition, inputPath);
                plaintext.AsSpan(modelBytes, chunkBytes - modelBytes).Clear();

                EncryptPages(dataKey, aadTemplate, firstPage, count, plaintext, ciphertext, tags);

                RandomAccess.Write(output, ciphertext.AsSpan(0, chunkBytes), pages.OutputDataOffset + dataPosition);
                var chunkTags = tags.AsSpan(0, count * SealFormat.TagSize);
                RandomAccess.Write(output, chunkTags, pages.TagTableOffset + firstPage * SealFormat.TagSize);
                IncrementalMac.Update(ref mac, chunkTags);
                progress?.Report(dataPosition + chunkBytes);
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(plaintext);
        }
    }

    /// <summary>Encrypts pages [firstPage, firstPage + count) of the chunk, in stripes on
    /// all cores: pages are independent, and the cipher, not the disk, is the bottleneck.</summary>
    private static void EncryptPages(Key dataKey, byte[] aadTemplate, long firstPage, int count, byte[] plaintext, byte[] ciphertext, byte[] tags)
    {
        const int LeastPagesPerStripe = 16;
        int stripes = Math.Clamp(count / LeastPagesPerStripe, 1, Environment.ProcessorCount);
        var aead = SealFormat.Aead;
        Parallel.For(0, stripes, stripe =>
        {
            Span<byte> nonce = stackalloc byte[SealFormat.NonceSize];
            Span<byte> aad = stackalloc byte[SealFormat.AadSize];
            Span<byte> sealedPage = stackalloc byte[SealFormat.PageSize + SealFormat.TagSize];
            aadTemplate.CopyTo(aad);
            for (int i = count * stripe / stripes; i < count * (stripe + 1) / stripes; i++)
            {
                long pageIndex = firstPage + i;
                SealFormat.WriteNonce(nonce, pageIndex);
                SealFormat.SetAadPageIndex(aad, pageIndex);
                aead.Encrypt(dataKey, nonce, aad, plaintext.AsSpan(i * SealFormat.PageSize, SealFormat.PageSize), sealedPage);
                sealedPage[..SealFormat.PageSize].CopyTo(ciphertext.AsSpan(i * SealFormat.PageSize));
                sealedPage[SealFormat.PageSize..].CopyTo(tags.AsSpan(i * SealFormat.TagSize));
            }
        });
    }

    private static void ReadFully(SafeFileHandle input, Span<byte> destination, long offset, string path)
    {
        while (!destination.IsEmpty)
        {
            int read = RandomAccess.Read(input, destination, offset);
            if (read == 0)
                throw new SealedModelException(SealAccessReason.MalformedModel,
                    $"'{path}' ended at byte {offset} while it was being sealed: it was truncated or changed meanwhile. Seal it again once nothing writes to it.");
            destination = destination[read..];
            offset += read;
        }
    }

    private static void RequireDistinct(IReadOnlyList<PublicIdentity> identities, string parameter, string what, int limit, string advice)
    {
        ArgumentNullException.ThrowIfNull(identities, parameter);
        if (identities.Count == 0)
            throw new ArgumentException($"No {what} was given. {advice}", parameter);
        if (identities.Count > limit)
            throw new ArgumentException($"{identities.Count} {what}s were given, more than the {limit} a sealed model can name.", parameter);
        var seen = new HashSet<PublicIdentity>();
        foreach (var identity in identities)
        {
            if (identity is null)
                throw new ArgumentException($"A {what} is null.", parameter);
            if (!seen.Add(identity))
                throw new ArgumentException($"The {what} {identity.Fingerprint.ToShortString()} is given twice. {advice}", parameter);
        }
    }
}
