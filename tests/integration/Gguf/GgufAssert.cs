using Tibet.Core.Gguf;
using Xunit;

namespace Tibet.IntegrationTests.Gguf;

internal static class GgufAssert
{
    public static GgufFile Read(byte[] file, GgufLimits? limits = null) =>
        GgufFile.Read(new MemoryStream(file, writable: false), limits);

    /// <summary>Reading <paramref name="file"/> fails with a <see cref="GgufFormatException"/>
    /// whose message contains every fragment (case-insensitive).</summary>
    public static GgufFormatException Refuses(byte[] file, params string[] fragments) =>
        RefusesWithLimits(file, null, fragments);

    public static GgufFormatException RefusesWithLimits(byte[] file, GgufLimits? limits, params string[] fragments)
    {
        var error = Assert.Throws<GgufFormatException>(() => Read(file, limits));
        foreach (string fragment in fragments)
            Assert.True(error.Message.Contains(fragment, StringComparison.OrdinalIgnoreCase),
                $"expected the message to mention \"{fragment}\", got: {error.Message}");
        Assert.InRange(error.FileOffset, 0, file.Length + 1L);
        Assert.StartsWith($"Invalid GGUF file at byte {error.FileOffset}: ", error.Message);
        return error;
    }
}
