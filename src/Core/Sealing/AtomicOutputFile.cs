using Tibet.Core.Crypto;

namespace Tibet.Core.Sealing;

/// <summary>
/// An output file that appears under its name only once complete: it is written to a
/// hidden temporary file in the same directory, flushed to disk, and renamed into place
/// by <see cref="Commit"/>. Disposing without committing deletes the temporary file, so
/// a failure never leaves a half-written output behind.
/// </summary>
internal sealed class AtomicOutputFile : IDisposable
{
    private readonly string _path;
    private readonly string _temporaryPath;
    private bool _committed;

    private AtomicOutputFile(string path, string temporaryPath, FileStream stream)
    {
        _path = path;
        _temporaryPath = temporaryPath;
        Stream = stream;
    }

    /// <summary>The temporary file, open for reading and writing, unbuffered.</summary>
    public FileStream Stream { get; }

    /// <exception cref="IOException"><paramref name="path"/> already exists, or its directory cannot be written.</exception>
    public static AtomicOutputFile Create(string path, UnixFileMode mode)
    {
        string fullPath = Path.GetFullPath(path);
        if (File.Exists(fullPath) || Directory.Exists(fullPath))
            throw new IOException($"'{path}' already exists; choose another output path, or remove it first.");
        string directory = Path.GetDirectoryName(fullPath)
            ?? throw new IOException($"'{path}' names no file; give an output file path.");
        Span<byte> suffix = stackalloc byte[8];
        SecureRandom.Fill(suffix);
        string temporaryPath = Path.Combine(directory, $".{Path.GetFileName(fullPath)}.{Convert.ToHexStringLower(suffix)}.partial");

        var options = new FileStreamOptions
        {
            Mode = FileMode.CreateNew,
            Access = FileAccess.ReadWrite,
            Share = FileShare.None,
            BufferSize = 0,
        };
        if (OperatingSystem.IsLinux())
            options.UnixCreateMode = mode;
        return new AtomicOutputFile(fullPath, temporaryPath, new FileStream(temporaryPath, options));
    }

    /// <summary>Flushes the file to disk and renames it to its final name, refusing to
    /// replace a file that appeared there meanwhile.</summary>
    public void Commit()
    {
        Stream.Flush(flushToDisk: true);
        Stream.Dispose();
        File.Move(_temporaryPath, _path, overwrite: false);
        _committed = true;
    }

    /// <summary>Deletes the temporary file unless <see cref="Commit"/> succeeded.</summary>
    public void Dispose()
    {
        if (_committed)
            return;
        Stream.Dispose();
        try
        {
            File.Delete(_temporaryPath);
        }
        catch (IOException)
        {
            // The original failure is what the caller needs to hear about; a leftover
            // hidden .partial file is harmless and named for what it is.
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
