using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace Tibet.Core.Audit;

/// <summary>
/// One audit record as one line of JSON, with the members always in this order:
/// <code>
/// {"v":1,"seq":N,"time":"2025-01-31T12:00:00.123456Z","pid":1234,"program":"/usr/bin/redis-server",
///  "identity":"&lt;64 hex&gt;"|null,"object":"...","decision":"granted"|"denied","reason":"...","prev":"&lt;64 hex&gt;"}
/// </code>
/// Written with Utf8JsonWriter and read with Utf8JsonReader (no reflection, so it runs
/// inside the NativeAOT interposer). The reader accepts exactly this shape.
/// </summary>
internal static class AuditRecordFormat
{
    public const int Version = 1;

    /// <summary>Longest line a record can produce (texts are cut before writing, and
    /// escaping at most sextuples a character), with room to spare.</summary>
    public const int MaxLineLength = 64 * 1024;

    private const string TimeFormat = "yyyy-MM-dd'T'HH:mm:ss.ffffff'Z'";
    private const string Ellipsis = "…";

    private static readonly JsonWriterOptions WriterOptions = new()
    {
        // Non-ASCII stays readable UTF-8; control characters and quotes are still escaped.
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        Indented = false,
    };

    /// <summary>The record's line, without the newline.</summary>
    public static byte[] Write(long sequence, DateTime utcTime, int processId, string program, string? identity,
        string obj, AuditDecision decision, string reason, string previous)
    {
        var buffer = new ArrayBufferWriter<byte>(512);
        using (var writer = new Utf8JsonWriter(buffer, WriterOptions))
        {
            writer.WriteStartObject();
            writer.WriteNumber("v", Version);
            writer.WriteNumber("seq", sequence);
            writer.WriteString("time", utcTime.ToString(TimeFormat, CultureInfo.InvariantCulture));
            writer.WriteNumber("pid", processId);
            writer.WriteString("program", ValidUtf8(Cut(program, AuditEntry.MaxTextLength)));
            if (identity == null)
                writer.WriteNull("identity");
            else
                writer.WriteString("identity", identity);
            writer.WriteString("object", ValidUtf8(Cut(obj, AuditEntry.MaxTextLength)));
            writer.WriteString("decision", DecisionName(decision));
            writer.WriteString("reason", ValidUtf8(Cut(reason, AuditEntry.MaxReasonLength)));
            writer.WriteString("prev", previous);
            writer.WriteEndObject();
        }
        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>Parses one line (without its newline); on failure
    /// <paramref name="problem"/> says what is wrong.</summary>
    public static bool TryParse(ReadOnlySpan<byte> line, [NotNullWhen(true)] out AuditRecord? record, out string problem)
    {
        record = null;
        try
        {
            var reader = new Utf8JsonReader(line, new JsonReaderOptions { MaxDepth = 2 });
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
                return Fail("it is not a JSON object", out problem);
            if (!ReadNumber(ref reader, "v", out long version, out problem))
                return false;
            if (version != Version)
                return Fail($"it has record version {version}, and this tibet reads version {Version}", out problem);
            if (!ReadNumber(ref reader, "seq", out long sequence, out problem))
                return false;
            if (sequence < 1)
                return Fail($"its sequence number {sequence} is not positive", out problem);
            if (!ReadString(ref reader, "time", allowNull: false, out string? time, out problem))
                return false;
            if (!DateTime.TryParseExact(time, TimeFormat, CultureInfo.InvariantCulture, DateTimeStyles.AdjustToUniversal, out _))
                return Fail($"its time '{time}' is not of the form {TimeFormat.Replace("'", "", StringComparison.Ordinal)}", out problem);
            if (!ReadNumber(ref reader, "pid", out long pid, out problem))
                return false;
            if (pid is < 0 or > int.MaxValue)
                return Fail($"its pid {pid} is not a process id", out problem);
            if (!ReadString(ref reader, "program", allowNull: false, out string? program, out problem))
                return false;
            if (!ReadString(ref reader, "identity", allowNull: true, out string? identity, out problem))
                return false;
            if (identity != null && !AuditChain.IsHash(identity))
                return Fail("its identity is neither null nor a 64-digit lowercase hex fingerprint", out problem);
            if (!ReadString(ref reader, "object", allowNull: false, out string? obj, out problem))
                return false;
            if (!ReadString(ref reader, "decision", allowNull: false, out string? decisionName, out problem))
                return false;
            if (!TryParseDecision(decisionName, out var decision))
                return Fail($"its decision '{decisionName}' is neither \"granted\" nor \"denied\"", out problem);
            if (!ReadString(ref reader, "reason", allowNull: false, out string? reason, out problem))
                return false;
            if (!ReadString(ref reader, "prev", allowNull: false, out string? previous, out problem))
                return false;
            if (!AuditChain.IsHash(previous))
                return Fail("its prev is not a 64-digit lowercase hex SHA-256", out problem);
            if (!reader.Read() || reader.TokenType != JsonTokenType.EndObject)
                return Fail("it has members after \"prev\"", out problem);
            if (reader.Read())
                return Fail("it has text after the JSON object", out problem);
            record = new AuditRecord(sequence, time!, (int)pid, program!, identity, obj!, decision, reason!, previous!);
            return true;
        }
        catch (JsonException e)
        {
            return Fail($"it is not valid JSON ({e.Message})", out problem);
        }
        catch (InvalidOperationException e)
        {
            return Fail($"it is not valid JSON ({e.Message})", out problem);
        }
    }

    public static string DecisionName(AuditDecision decision) => decision == AuditDecision.Granted ? "granted" : "denied";

    private static bool TryParseDecision(string? name, out AuditDecision decision)
    {
        decision = name == "granted" ? AuditDecision.Granted : AuditDecision.Denied;
        return name is "granted" or "denied";
    }

    private static bool ReadNumber(ref Utf8JsonReader reader, string name, out long value, out string problem)
    {
        value = 0;
        if (!ReadPropertyName(ref reader, name, out problem))
            return false;
        if (!reader.Read() || reader.TokenType != JsonTokenType.Number || !reader.TryGetInt64(out value))
            return Fail($"its \"{name}\" is not an integer", out problem);
        return true;
    }

    private static bool ReadString(ref Utf8JsonReader reader, string name, bool allowNull, out string? value, out string problem)
    {
        value = null;
        if (!ReadPropertyName(ref reader, name, out problem))
            return false;
        if (!reader.Read())
            return Fail($"it ends after \"{name}\"", out problem);
        if (reader.TokenType == JsonTokenType.Null && allowNull)
            return true;
        if (reader.TokenType != JsonTokenType.String)
            return Fail($"its \"{name}\" is not a string", out problem);
        value = reader.GetString();
        return true;
    }

    private static bool ReadPropertyName(ref Utf8JsonReader reader, string name, out string problem)
    {
        if (!reader.Read() || reader.TokenType != JsonTokenType.PropertyName || !reader.ValueTextEquals(name))
            return Fail($"member \"{name}\" is missing or out of order", out problem);
        problem = "";
        return true;
    }

    private static bool Fail(string message, out string problem)
    {
        problem = message;
        return false;
    }

    private static string Cut(string text, int maxLength) =>
        text.Length <= maxLength ? text : string.Concat(text.AsSpan(0, maxLength - Ellipsis.Length), Ellipsis);

    /// <summary>UTF-8 with lone surrogates replaced (U+FFFD), which Utf8JsonWriter would
    /// otherwise refuse; a path from the kernel may hold any bytes.</summary>
    private static byte[] ValidUtf8(string text) => Encoding.UTF8.GetBytes(text);
}
