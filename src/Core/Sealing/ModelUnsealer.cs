using System.Security.Cryptography;
using Tibet.Core.Gguf;

namespace Tibet.Core.Sealing;

/// <summary>
/// Turns a sealed model back into the plain GGUF model it was made from, given the key
/// of a live access decision: the same metadata without the seal's keys, the original
/// alignment, the same tensor table, and byte-identical tensor data.
/// </summary>
public static class ModelUnsealer
{
    private const int ChunkPages = 256;

    /// <summary>
    /// Decrypts <paramref name="model"/> with <paramref name="key"/> into
    /// <paramref name="output"/>, which must not exist yet. The output is created with
    /// mode 0600 (it is the model in the clear), written to a temporary file and renamed
    /// into place only when every page has authenticated; on any failure nothing is left.
    /// </summary>
    /// <param name="progress">Receives the data bytes decrypted so far, up to DataPages × PageSize.</param>
    /// <exception cref="SealedModelException">A data page fails authentication (DataTampered).</exception>
    /// <exception cref="ArgumentException">The key belongs to another sealed file.</exception>
    /// <exception cref="IOException">The output exists, or a file cannot be read or written.</exception>
    public static void Unseal(SealedModel model, SealedModelKey key, string output, IProgress<long>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(output);
        if (!key.FileId.SequenceEqual(model.Requirements.FileId) || key.DataPages != model.DataPages)
            throw new ArgumentException(
                $"The key is for sealed file {Convert.ToHexStringLower(key.FileId)}, not for '{model.SourceName}' ({model.Requirements.FileIdHex}); decide access on this model and use that decision's key.",
                nameof(key));
        var writer = BuildPlainHeader(model.Header);
        using var outputFile = AtomicOutputFile.Create(output, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        var stream = outputFile.Stream;
        writer.WriteHeader(stream);
        WriteTensorData(model, key, writer, stream, progress);
        if (!writer.IsComplete)
            throw new InvalidOperationException("The data pages ended before every tensor was written.");
        outputFile.Commit();
    }

    private static GgufWriter BuildPlainHeader(GgufFile header)
    {
        var writer = new GgufWriter(header.Alignment);
        foreach (var entry in header.Metadata)
        {
            if (entry.Key.StartsWith(SealFormat.KeyPrefix, StringComparison.Ordinal)
                || entry.Key is GgufFormat.AlignmentKey or GgufWriter.HeaderPaddingKey)
                continue;
            writer.Add(entry.Key, entry.Value);
        }
        foreach (var tensor in header.Tensors)
        {
            var copy = writer.AddTensor(tensor.Name, tensor.Type, tensor.Dimensions.ToArray());
            if (copy.Offset != tensor.Offset)
                throw new InvalidOperationException(
                    $"Tensor '{tensor.Name}' landed at data offset {copy.Offset} in the plain header instead of {tensor.Offset}.");
        }
        return writer;
    }

    /// <summary>Decrypts the data pages in order and hands each tensor its bytes; the
    /// writer supplies the padding between tensors itself.</summary>
    private static void WriteTensorData(SealedModel model, SealedModelKey key, GgufWriter writer, Stream output, IProgress<long>? progress)
    {
        const int ChunkBytes = ChunkPages * SealedModel.PageSize;
        var tensors = writer.Tensors;
        int next = 0;
        long writtenOfNext = 0;
        byte[] ciphertext = new byte[ChunkBytes];
        byte[] plaintext = GC.AllocateArray<byte>(ChunkBytes, pinned: true);
        try
        {
            for (long firstPage = 0; firstPage < model.DataPages; firstPage += ChunkPages)
            {
                int count = (int)Math.Min(ChunkPages, model.DataPages - firstPage);
                int chunkBytes = count * SealedModel.PageSize;
                model.ReadCiphertextPages(firstPage, ciphertext.AsSpan(0, chunkBytes));
                for (int i = 0; i < count; i++)
                {
                    var page = new Range(i * SealedModel.PageSize, (i + 1) * SealedModel.PageSize);
                    if (!key.TryDecryptPage(firstPage + i, ciphertext.AsSpan(page), plaintext.AsSpan(page)))
                        throw new SealedModelException(SealAccessReason.DataTampered,
                            $"Data page {firstPage + i} of '{model.SourceName}' fails authentication: its ciphertext was altered. Nothing was written; get an intact copy of the sealed model.");
                }

                long chunkStart = firstPage * SealedModel.PageSize;
                long chunkEnd = chunkStart + chunkBytes;
                while (next < tensors.Count)
                {
                    var tensor = tensors[next];
                    long position = tensor.Offset + writtenOfNext;
                    if (position >= chunkEnd)
                        break;
                    if (writtenOfNext == 0)
                        writer.BeginTensorData(output, tensor);
                    int take = (int)(Math.Min(tensor.Offset + tensor.ByteSize, chunkEnd) - position);
                    writer.WriteTensorChunk(output, plaintext.AsSpan((int)(position - chunkStart), take));
                    writtenOfNext += take;
                    if (writtenOfNext == tensor.ByteSize)
                    {
                        writer.EndTensorData(output);
                        next++;
                        writtenOfNext = 0;
                    }
                }
                progress?.Report(chunkEnd);
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(plaintext);
        }
    }
}
