using System.Text.Json;

namespace Tibet.Bench;

/// <summary>What every benchmark's JSON result starts with, so that results of different
/// benchmarks and days read alike in bench/results.</summary>
internal static class BenchJson
{
    /// <summary>Creates <paramref name="json"/> (and its folder). The caller disposes the
    /// stream after the writer: a Utf8JsonWriter does not close what it writes to.</summary>
    public static FileStream Create(FileInfo json)
    {
        Directory.CreateDirectory(json.DirectoryName ?? ".");
        return File.Create(json.FullName);
    }

    /// <summary>Starts the result object on <paramref name="stream"/> with the common
    /// fields; the caller adds its own and ends the object.</summary>
    public static Utf8JsonWriter Begin(Stream stream, string benchmark, string date, string machine, string command,
        int pageSize, IEnumerable<long> sizes, IEnumerable<string> ciphers)
    {
        var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        w.WriteStartObject();
        w.WriteString("benchmark", benchmark);
        w.WriteString("date", date);
        w.WriteString("machine", machine);
        w.WriteString("command", command);
        w.WriteNumber("pageSize", pageSize);
        w.WriteStartArray("sizes");
        foreach (long size in sizes) w.WriteNumberValue(size);
        w.WriteEndArray();
        w.WriteStartArray("ciphers");
        foreach (string cipher in ciphers) w.WriteStringValue(cipher);
        w.WriteEndArray();
        return w;
    }
}
