using System.Buffers.Binary;

namespace Tibet.Launcher;

/// <summary>
/// Whether LD_PRELOAD can reach a program at all, told from its file before it runs:
/// a statically linked executable has no dynamic loader (no PT_INTERP) to preload
/// anything, and a set-user-ID or set-group-ID executable runs with AT_SECURE, where the
/// loader ignores a preload from a path like ours. Such a program runs unencrypted, and
/// tibet-run says so before it starts instead of only at exit.
/// </summary>
internal static class PreloadReach
{
    private const uint PT_INTERP = 3;
    private const int SetUserId = 0x800, SetGroupId = 0x400; // S_ISUID, S_ISGID

    /// <summary>Why the preload cannot reach <paramref name="command"/>, or null when it can
    /// (or when the file cannot be read: then the exec itself will say what is wrong).</summary>
    public static string? Obstacle(string command)
    {
        string? path = Resolve(command);
        if (path == null || !OperatingSystem.IsLinux())
            return null;
        try
        {
            var mode = File.GetUnixFileMode(path);
            if (((int)mode & (SetUserId | SetGroupId)) != 0)
                return $"{path} is set-user-ID or set-group-ID: the dynamic loader ignores LD_PRELOAD of libtibet.so for it";
            return IsStaticElf(path) ? $"{path} is statically linked: there is no dynamic loader to preload libtibet.so" : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>A 64-bit ELF executable without a PT_INTERP segment. Scripts ("#!") and
    /// anything else that is not ELF are not judged: their interpreter is what runs.</summary>
    private static bool IsStaticElf(string path)
    {
        using var file = File.OpenRead(path);
        Span<byte> header = stackalloc byte[64];
        if (file.ReadAtLeast(header, 64, throwOnEndOfStream: false) < 64
            || !header[..4].SequenceEqual("\u007FELF"u8) || header[4] != 2 /* ELFCLASS64 */ || header[5] != 1 /* little-endian */)
            return false;
        ushort type = BinaryPrimitives.ReadUInt16LittleEndian(header[16..]);
        if (type != 2 /* ET_EXEC */ && type != 3 /* ET_DYN */)
            return false;
        long programHeaders = (long)BinaryPrimitives.ReadUInt64LittleEndian(header[32..]);
        ushort entrySize = BinaryPrimitives.ReadUInt16LittleEndian(header[54..]);
        ushort count = BinaryPrimitives.ReadUInt16LittleEndian(header[56..]);
        if (entrySize < 4 || count == 0 || count > 4096)
            return false;
        var entry = new byte[entrySize];
        for (int i = 0; i < count; i++)
        {
            file.Position = programHeaders + (long)i * entrySize;
            if (file.ReadAtLeast(entry, entrySize, throwOnEndOfStream: false) < entrySize)
                return false;
            if (BinaryPrimitives.ReadUInt32LittleEndian(entry) == PT_INTERP)
                return false;
        }
        // ET_DYN without PT_INTERP is a shared library or a static-pie executable; both
        // run without the loader's preload.
        return true;
    }

    /// <summary>The file exec would run: a path as given, else the first match on PATH.</summary>
    private static string? Resolve(string command)
    {
        if (command.Contains('/'))
            return File.Exists(command) ? command : null;
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = Path.Combine(dir, command);
            if (File.Exists(candidate))
                return candidate;
        }
        return null;
    }
}
