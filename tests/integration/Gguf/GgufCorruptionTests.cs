using System.Buffers.Binary;
using Tibet.Core.Gguf;
using Xunit;

namespace Tibet.IntegrationTests.Gguf;

/// <summary>
/// Property: whatever is done to a valid file, reading it either yields a self-consistent
/// header (every tensor inside the file, aligned, packed, sized by its shape) or throws
/// <see cref="GgufFormatException"/>. Never another exception, never a hang, never an
/// allocation out of proportion to the file. Every case derives from a fixed seed that
/// the failure message prints, so a failure reproduces.
/// </summary>
public class GgufCorruptionTests
{
    private const int CasesPerKind = 2000;
    private static readonly TimeSpan ParseBound = TimeSpan.FromSeconds(20);

    private static readonly byte[] Pristine = BuildSample(out PristineDataOffset);
    private static readonly long PristineDataOffset;
    private static readonly int[] UInt64Fields = FindUInt64Fields(Pristine);

    public enum Corruption
    {
        FlipBytes,
        Truncate,
        HugeUInt64Field,
        SpliceGarbage,
        Several,
    }

    [Fact]
    public void The_sample_is_valid_and_ends_exactly_at_its_last_tensor()
    {
        var file = GgufAssert.Read(Pristine);
        AssertSelfConsistent(file, Pristine, "pristine");
        var last = file.Tensors[^1];
        Assert.Equal(Pristine.Length, file.FileOffsetOf(last) + last.ByteSize);
        Assert.Equal(64u, file.Alignment);
        Assert.True(UInt64Fields.Length > 150, $"only {UInt64Fields.Length} uint64 fields found");
    }

    [Theory]
    [InlineData(Corruption.FlipBytes, 11)]
    [InlineData(Corruption.Truncate, 12)]
    [InlineData(Corruption.HugeUInt64Field, 13)]
    [InlineData(Corruption.SpliceGarbage, 14)]
    [InlineData(Corruption.Several, 15)]
    public void A_corrupted_file_parses_consistently_or_is_refused_with_a_format_error(Corruption kind, int seed)
    {
        int refused = 0;
        for (int i = 0; i < CasesPerKind; i++)
        {
            int caseSeed = seed * 1_000_003 + i;
            var random = new Random(caseSeed);
            byte[] bytes = (byte[])Pristine.Clone();
            var what = new List<string>();
            bytes = Corrupt(bytes, kind, random, what);
            string label = $"seed {caseSeed} ({kind} case {i}: {string.Join("; ", what)})";

            var outcome = ParseBounded(bytes, label);
            if (outcome.Error is null)
                AssertSelfConsistent(outcome.File!, bytes, label);
            else if (outcome.Error is GgufFormatException)
                refused++;
            else
                Assert.Fail($"{label}: {outcome.Error.GetType().Name} instead of GgufFormatException: {outcome.Error}");

            long allowance = 16L * bytes.Length + (1 << 20);
            Assert.True(outcome.AllocatedBytes < allowance,
                $"{label}: parsing {bytes.Length} bytes allocated {outcome.AllocatedBytes} bytes");
        }

        // Every truncation cuts the last tensor, so none may pass; the other kinds must at
        // least be caught most of the time, or the corruption is not reaching the header.
        if (kind == Corruption.Truncate)
            Assert.Equal(CasesPerKind, refused);
        else
            Assert.True(refused > CasesPerKind / 2, $"{kind}: only {refused} of {CasesPerKind} corrupted files were refused");
    }

    [Fact]
    public void Every_single_byte_change_in_the_header_is_parsed_consistently_or_refused()
    {
        for (int position = 0; position < PristineDataOffset; position++)
        {
            foreach (byte value in new byte[] { 0x00, 0xFF, (byte)(Pristine[position] ^ 0x01), (byte)(Pristine[position] + 0x40) })
            {
                if (value == Pristine[position])
                    continue;
                byte[] bytes = (byte[])Pristine.Clone();
                bytes[position] = value;
                string label = $"byte {position} set to 0x{value:X2} (was 0x{Pristine[position]:X2})";
                var outcome = ParseBounded(bytes, label);
                if (outcome.Error is null)
                    AssertSelfConsistent(outcome.File!, bytes, label);
                else
                    Assert.True(outcome.Error is GgufFormatException, $"{label}: {outcome.Error}");
            }
        }
    }

    private static byte[] Corrupt(byte[] bytes, Corruption kind, Random random, List<string> what)
    {
        // Under Several, an earlier truncation can leave nothing to corrupt.
        if (bytes.Length == 0)
            return bytes;
        switch (kind)
        {
            case Corruption.FlipBytes:
                for (int n = random.Next(1, 5); n > 0; n--)
                {
                    int at = PickPosition(random, bytes.Length);
                    byte mask = (byte)(1 << random.Next(8));
                    if (random.Next(4) == 0)
                        mask = (byte)random.Next(1, 256);
                    bytes[at] ^= mask;
                    what.Add($"byte {at} ^= 0x{mask:X2}");
                }
                return bytes;

            case Corruption.Truncate:
            {
                int length = random.Next(4) == 0 ? random.Next(bytes.Length) : random.Next((int)Math.Min(PristineDataOffset + 1, bytes.Length));
                what.Add($"cut to {length} bytes");
                return bytes[..length];
            }

            case Corruption.HugeUInt64Field:
                for (int n = random.Next(1, 3); n > 0; n--)
                {
                    int at = UInt64Fields[random.Next(UInt64Fields.Length)];
                    if (at + 8 > bytes.Length)
                        continue;
                    ulong original = BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(at));
                    ulong value = random.Next(7) switch
                    {
                        0 => ulong.MaxValue,
                        1 => 1UL << 63,
                        2 => (1UL << random.Next(31, 64)) + (ulong)random.Next(),
                        3 => (ulong)random.NextInt64(),
                        4 => original + (ulong)random.Next(1, 100),
                        5 => original - (ulong)random.Next(1, 100),
                        _ => 0,
                    };
                    BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(at), value);
                    what.Add($"uint64 at {at} = {value} (was {original})");
                }
                return bytes;

            case Corruption.SpliceGarbage:
            {
                int at = PickPosition(random, bytes.Length);
                var garbage = new byte[random.Next(1, 64)];
                random.NextBytes(garbage);
                if (random.Next(2) == 0)
                {
                    garbage.AsSpan(0, Math.Min(garbage.Length, bytes.Length - at)).CopyTo(bytes.AsSpan(at));
                    what.Add($"{garbage.Length} random bytes written at {at}");
                    return bytes;
                }
                what.Add($"{garbage.Length} random bytes inserted at {at}");
                return [.. bytes.AsSpan(0, at), .. garbage, .. bytes.AsSpan(at)];
            }

            case Corruption.Several:
                for (int n = random.Next(2, 5); n > 0; n--)
                    bytes = Corrupt(bytes, (Corruption)random.Next((int)Corruption.Several), random, what);
                return bytes;

            default:
                throw new ArgumentOutOfRangeException(nameof(kind));
        }
    }

    /// <summary>Mostly the header, where corruption matters; sometimes anywhere.</summary>
    private static int PickPosition(Random random, int length) =>
        random.Next(10) == 0 ? random.Next(length) : random.Next((int)Math.Min(PristineDataOffset, length));

    private readonly record struct Outcome(GgufFile? File, Exception? Error, long AllocatedBytes);

    private static Outcome ParseBounded(byte[] bytes, string label)
    {
        var parse = Task.Run(() =>
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            try
            {
                var file = GgufAssert.Read(bytes);
                return new Outcome(file, null, GC.GetAllocatedBytesForCurrentThread() - before);
            }
            catch (Exception error)
            {
                return new Outcome(null, error, GC.GetAllocatedBytesForCurrentThread() - before);
            }
        });
        Assert.True(parse.Wait(ParseBound), $"{label}: parsing did not finish within {ParseBound.TotalSeconds} s");
        return parse.Result;
    }

    /// <summary>What a successful read promises, checked from first principles.</summary>
    private static void AssertSelfConsistent(GgufFile file, byte[] bytes, string label)
    {
        Assert.True(file.FileLength == bytes.Length, $"{label}: FileLength {file.FileLength} vs {bytes.Length}");
        Assert.True(file.Version == 3, $"{label}: version {file.Version}");
        Assert.True(file.Alignment != 0 && (file.Alignment & (file.Alignment - 1)) == 0, $"{label}: alignment {file.Alignment}");
        Assert.True(file.DataOffset % file.Alignment == 0 && file.DataOffset >= file.HeaderLength
                    && file.DataOffset - file.HeaderLength < file.Alignment, $"{label}: data offset {file.DataOffset}, header {file.HeaderLength}");
        Assert.True(file.Metadata.Select(e => e.Key).Distinct().Count() == file.Metadata.Count, $"{label}: duplicate keys");
        Assert.True(file.Metadata.All(e => e.Key.Length > 0), $"{label}: empty key");
        Assert.True(file.Tensors.Select(t => t.Name).Distinct().Count() == file.Tensors.Count, $"{label}: duplicate tensor names");

        long expectedOffset = 0;
        foreach (var tensor in file.Tensors)
        {
            Assert.True(GgmlTypeInfo.TryGetBlock(tensor.Type, out int blockElements, out int blockBytes), $"{label}: type {tensor.Type}");
            Assert.True(tensor.Dimensions.Count is >= 1 and <= 4 && tensor.Dimensions.All(d => d >= 1), $"{label}: shape of {tensor.Name}");
            Assert.True(tensor.Dimensions[0] % blockElements == 0, $"{label}: ne0 of {tensor.Name}");
            Int128 elements = tensor.Dimensions.Aggregate((Int128)1, (product, d) => product * d);
            Int128 size = tensor.Dimensions.Skip(1).Aggregate((Int128)(tensor.Dimensions[0] / blockElements * blockBytes), (product, d) => product * d);
            Assert.True(elements == tensor.ElementCount && size == tensor.ByteSize, $"{label}: size of {tensor.Name}");
            Assert.True(tensor.Offset == expectedOffset, $"{label}: {tensor.Name} at {tensor.Offset}, expected {expectedOffset}");
            Int128 end = (Int128)file.FileOffsetOf(tensor) + tensor.ByteSize;
            Assert.True(end <= bytes.Length, $"{label}: {tensor.Name} ends at {end}, file is {bytes.Length} bytes");
            expectedOffset = (tensor.Offset + tensor.ByteSize + file.Alignment - 1) / file.Alignment * file.Alignment;
        }
    }

    private static byte[] BuildSample(out long dataOffset)
    {
        var writer = new GgufWriter(alignment: 64);
        writer.Add("general.architecture", "llama");
        writer.Add("general.name", "corruption sample");
        writer.Add("llama.context_length", 2048u);
        writer.Add("llama.rope.freq_base", 10000f);
        writer.Add("general.file_type", 7);
        writer.Add("general.quantized", true);
        writer.Add("sample.u64", ulong.MaxValue);
        writer.Add("sample.i64", -5L);
        writer.Add("sample.f64", Math.PI);
        writer.Add("sample.i8", (sbyte)-3);
        writer.Add("sample.u16", (ushort)7);
        var tokens = Enumerable.Range(0, 120).Select(i => i switch { 0 => "<unk>", 1 => "<s>", 2 => "</s>", _ => $"▁t{i}ü" }).ToArray();
        writer.Add("tokenizer.ggml.model", "llama");
        writer.AddArray("tokenizer.ggml.tokens", tokens);
        writer.AddArray("tokenizer.ggml.scores", tokens.Select((_, i) => -i * 0.5f).ToArray());
        writer.AddArray("tokenizer.ggml.token_type", tokens.Select((_, i) => i < 3 ? 3 : 1).ToArray());
        writer.AddArray("tokenizer.ggml.merges", Enumerable.Range(0, 40).Select(i => $"▁ t{i}").ToArray());
        writer.AddArray("sample.bools", new[] { true, false, true });
        writer.AddTensor("token_embd.weight", GgmlType.Q4_0, 64, 120);
        writer.AddTensor("blk.0.attn_norm.weight", GgmlType.F32, 64);
        writer.AddTensor("blk.0.ffn_up.weight", GgmlType.Q8_0, 64, 8);
        writer.AddTensor("output.weight", GgmlType.F16, 64, 30, 2);
        // 16 × 4 = 64 bytes: a multiple of the alignment, so the file ends with this tensor.
        writer.AddTensor("output_norm.weight", GgmlType.F32, 16);
        dataOffset = writer.DataOffset;
        return GgufRoundTripTests.Write(writer, t => GgufRoundTripTests.Pattern(t.ByteSize, t.Name.Length));
    }

    /// <summary>Positions of every uint64 field of a valid file (counts, string and array
    /// lengths, dimensions, offsets), found by walking it independently of the reader.</summary>
    private static int[] FindUInt64Fields(byte[] file)
    {
        var fields = new List<int> { 8, 16 };
        int at = 24;
        ulong U64(int position) => BinaryPrimitives.ReadUInt64LittleEndian(file.AsSpan(position));
        uint U32(int position) => BinaryPrimitives.ReadUInt32LittleEndian(file.AsSpan(position));
        void SkipString()
        {
            fields.Add(at);
            at += 8 + (int)U64(at);
        }
        void SkipValue(uint type)
        {
            if (type == (uint)GgufValueType.String)
                SkipString();
            else
                at += type switch { 0 or 1 or 7 => 1, 2 or 3 => 2, 4 or 5 or 6 => 4, _ => 8 };
        }

        for (ulong entry = 0; entry < U64(16); entry++)
        {
            SkipString();
            uint type = U32(at);
            at += 4;
            if (type != (uint)GgufValueType.Array)
            {
                SkipValue(type);
                continue;
            }
            uint elementType = U32(at);
            fields.Add(at + 4);
            ulong count = U64(at + 4);
            at += 12;
            for (ulong i = 0; i < count; i++)
                SkipValue(elementType);
        }
        for (ulong tensor = 0; tensor < U64(8); tensor++)
        {
            SkipString();
            uint dimensions = U32(at);
            at += 4;
            for (uint d = 0; d < dimensions; d++, at += 8)
                fields.Add(at);
            at += 4;
            fields.Add(at);
            at += 8;
        }
        return [.. fields];
    }
}
