using Tibet.Core.Gguf;

namespace Tibet.Fuzz.Targets;

/// <summary>
/// The GGUF header reader (GgufFile.Read → GgufHeaderParser over GgufInput), which every
/// file a program opens under tibet-run may reach. GgufFile documents
/// <see cref="GgufFormatException"/> for any violation.
/// </summary>
internal sealed class GgufTarget : FuzzTarget
{
    public override string Name => "gguf";

    public override string RefusalContract => nameof(GgufFormatException);

    public override FuzzOutcome Run(byte[] input)
    {
        GgufFile file;
        try
        {
            file = GgufFile.Read(new MemoryStream(input, writable: false));
        }
        catch (GgufFormatException e)
        {
            return FuzzOutcome.Refuse(e);
        }

        // A file that reads has every tensor inside the file, in order, at aligned
        // offsets (GgufFile's remarks): check the promise, since consumers map by it.
        long end = file.DataOffset;
        foreach (var tensor in file.Tensors)
        {
            long offset = file.FileOffsetOf(tensor);
            if (offset < end || tensor.Offset % file.Alignment != 0 || offset + tensor.ByteSize > file.FileLength)
                throw new FuzzInvariantException(
                    $"tensor '{tensor.Name}' at {offset} (+{tensor.ByteSize}) breaks the layout promise (previous end {end}, alignment {file.Alignment}, file {file.FileLength})");
            end = offset + tensor.ByteSize;
            if (!file.TryGetTensor(tensor.Name, out var byName) || !ReferenceEquals(byName, tensor))
                throw new FuzzInvariantException($"tensor '{tensor.Name}' is not found by its own name");
        }
        int entries = 0;
        foreach (var entry in file.Metadata)
        {
            _ = entry.Value.DescribeType();
            entries++;
        }
        return FuzzOutcome.Accept($"GGUF v{file.Version}, {entries} metadata entries, {file.Tensors.Count} tensors");
    }
}
