namespace Tibet.IntegrationTests.Support;

/// <summary>Reproducible test contents.</summary>
internal static class TestBytes
{
    /// <summary><paramref name="length"/> random bytes (incompressible), the same for the same seed.</summary>
    public static byte[] Random(int length, int seed)
    {
        var bytes = new byte[length];
        new System.Random(seed).NextBytes(bytes);
        return bytes;
    }
}
