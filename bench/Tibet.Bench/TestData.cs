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

    private static readonly string[] Phrases =
    [
        "the page was sealed", "the handler served the fault", "in the resident budget",
        "after the last request", "of the model weights", "the kernel moved the page",
        "when the cache was cold", "one of the threads", "for the next token",
        "between the two layers", "the server answered", "it was not the first time",
        "as the engine expected", "with the same key", "the people in the company",
        "through the water", "a little more memory", "before the process started",
        "the number of pages", "which the system had", "that the arena held",
        "there would have been", "they were in the world", "so the question was",
    ];

    private static string Pick(string[] list, Random random)
    {
        double u = random.NextDouble();
        return list[(int)(u * u * list.Length)]; // Zipf-like: early entries far more often
    }

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

        // Sentences built from common phrases and Zipf-distributed words, with a number
        // now and then: repetitive the way prose and logs are, never the same twice.
        var text = new StringBuilder(data.Length + 256);
        int sentence = 0;
        while (text.Length < data.Length)
        {
            int parts = 3 + random.Next(5);
            for (int w = 0; w < parts; w++)
            {
                string part = random.Next(2) == 0 ? Pick(Words, random) : Pick(Phrases, random);
                if (w == 0)
                    text.Append(char.ToUpperInvariant(part[0])).Append(part, 1, part.Length - 1);
                else
                    text.Append(part);
                if (random.Next(8) == 0)
                    text.Append(' ').Append(random.Next(1000));
                text.Append(w == parts - 1 ? ". " : " ");
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
