namespace Tibet.IntegrationTests.Support;

/// <summary>A file of random bytes on the disk-backed temporary directory (a model map's
/// source), deleted when disposed.</summary>
internal sealed class TempFile : IDisposable
{
    private TempFile(string path, byte[] contents)
    {
        Path = path;
        Contents = contents;
    }

    public string Path { get; }

    /// <summary>What was written.</summary>
    public byte[] Contents { get; }

    public static TempFile WithRandomBytes(string prefix, int length, int seed)
    {
        string path = System.IO.Path.Combine(RepoPaths.DiskTemp, $"{prefix}-{Guid.NewGuid():N}.bin");
        byte[] contents = TestBytes.Random(length, seed);
        File.WriteAllBytes(path, contents);
        return new TempFile(path, contents);
    }

    public void Dispose() => File.Delete(Path);
}
