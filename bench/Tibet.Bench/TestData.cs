using System.Text;

namespace Tibet.Bench;

/// <summary>The kinds of page contents the benchmarks use.</summary>
internal enum DataKind
{
    /// <summary>Seeded random bytes: incompressible.</summary>
    Random,

    /// <summary>English-ish prose with numbers: compresses about 3–4× with zstd level 3
    /// on single 4 KiB pages.</summary>
    TextLike,
}

internal static class TestData
{
    public const int PageSize = 4096;

    private static readonly string[] Words =
    [
        "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with",
        "be", "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which",
        "but", "have", "an", "had", "they", "you", "were", "their", "one", "all", "we",
        "can", "her", "has", "there", "been", "if", "more", "when", "will", "would", "who",
        "so", "no", "memory", "page", "kernel", "fault", "arena", "cipher", "engine",
        "request", "server", "model", "token", "weights", "layer", "cache", "thread",
        "budget", "sealed", "resident", "handler", "latency", "through", "between",
        "because", "before", "after", "should", "system", "process", "number", "people",
        "water", "little", "world", "government", "company", "question", "important",
    ];

    public static string Name(DataKind kind) => kind == DataKind.Random ? "random" : "text-like";

    /// <summary>Fills <paramref name="data"/> with <paramref name="kind"/> contents, from
    /// <paramref name="seed"/>; every page differs.</summary>
    public static void Fill(DataKind kind, Span<byte> data, int seed)
    {
        var random = new Random(seed);
        if (kind == DataKind.Random)
        {
            random.NextBytes(data);
            return;
        }

        var text = new StringBuilder(data.Length + 256);
        int sentence = 0;
        while (text.Length < data.Length)
        {
            int length = 6 + random.Next(14);
            for (int w = 0; w < length; w++)
            {
                string word = Words[random.Next(Words.Length)];
                if (w == 0)
                    text.Append(char.ToUpperInvariant(word[0])).Append(word, 1, word.Length - 1);
                else
                    text.Append(word);
                if (random.Next(9) == 0)
                    text.Append(' ').Append(random.Next(100_000));
                text.Append(w == length - 1 ? ". " : " ");
            }
            if (++sentence % 6 == 0)
                text.Append('\n');
        }
        Encoding.ASCII.GetBytes(text.ToString(0, data.Length), data);
    }

    /// <summary>Mean zstd (level 3) ratio of single pages, as the engine would compress them.</summary>
    public static double ZstdPageRatio(ReadOnlySpan<byte> data, int maxPages = 256)
    {
        using var compressor = new ZstdSharp.Compressor(3);
        byte[] destination = new byte[ZstdSharp.Compressor.GetCompressBound(PageSize)];
        long input = 0, output = 0;
        int pages = Math.Min(maxPages, data.Length / PageSize);
        for (int i = 0; i < pages; i++)
        {
            output += compressor.Wrap(data.Slice(i * PageSize, PageSize), destination);
            input += PageSize;
        }
        return output == 0 ? 0 : (double)input / output;
    }
}
