using System.Security.Cryptography;
using Microsoft.Win32.SafeHandles;
using Tibet.Core.Crypto;
using Tibet.Core.Interop;

namespace Tibet.Core.Identity;

/// <summary>
/// Reading and writing the identity layer's small files with the care secrets need:
/// contents go into pinned buffers the caller wipes, permissions are checked on the open
/// descriptor (not the path, which could change in between), and new files are created
/// with their final mode and renamed into place, so that they are never briefly readable
/// by others or half-written.
/// </summary>
/// <remarks>
/// Files are read only when reached without a symbolic link in the last component
/// (O_NOFOLLOW) and owned by the running user (or root, who can replace any file anyway):
/// otherwise another user who can write a directory on the way, or plant a link, could
/// hand tibet an identity, claim or passphrase of their choosing, or point it at a file it
/// should not read. The one exception: a passphrase may come through a descriptor the
/// process already holds (/dev/stdin, /dev/fd/N, a shell's &lt;(...)), which are links by
/// nature.
/// </remarks>
internal static class SecureFile
{
    /// <summary>Largest identity, claim or wrapped-key file accepted (they are all a few
    /// hundred bytes; the bound keeps hostile input from costing memory).</summary>
    public const int MaxSize = 64 * 1024;

    private const int GroupAndOtherBits = 0b000_111_111; // 0077

    public enum PermissionCheck
    {
        /// <summary>Public files: any mode.</summary>
        None,

        /// <summary>Secret files: refused when group or others have any access.</summary>
        Private,

        /// <summary>Passphrase files: checked when they are regular files; pipes and
        /// terminals are fine (their mode says nothing about who can read the data).</summary>
        IfRegularFile,
    }

    /// <summary>
    /// Reads a whole file of at most <paramref name="maxSize"/> bytes into a new pinned
    /// array. The caller wipes the array (it may hold secrets).
    /// </summary>
    /// <exception cref="IdentityException">Missing, unreadable, too open or too large.</exception>
    public static byte[] ReadAll(string path, string what, int maxSize, PermissionCheck check, out int length)
    {
        if (!IdentityAlgorithms.IsLinux)
            throw new PlatformNotSupportedException(IdentityAlgorithms.LinuxOnlyMessage);
        using SafeFileHandle handle = Open(path, what, allowDescriptorAlias: check == PermissionCheck.IfRegularFile);
        try
        {
            using var stream = new FileStream(handle, FileAccess.Read, bufferSize: 0);
            if (check == PermissionCheck.Private || check == PermissionCheck.IfRegularFile && stream.CanSeek)
                RequirePrivate(handle, path, what);

            byte[] buffer = GC.AllocateArray<byte>(maxSize + 1, pinned: true);
            int total = 0;
            while (total < buffer.Length)
            {
                int read = stream.Read(buffer, total, buffer.Length - total);
                if (read == 0)
                    break;
                total += read;
            }
            if (total > maxSize)
            {
                CryptographicOperations.ZeroMemory(buffer);
                throw new IdentityException(IdentityErrorKind.Malformed,
                    $"'{path}' is larger than {maxSize} bytes, so it is not a {what}; check that you named the right file.");
            }
            length = total;
            return buffer;
        }
        catch (IOException e)
        {
            throw new IdentityException(IdentityErrorKind.Io, $"Cannot read '{path}': {e.Message}", e);
        }
    }

    /// <summary>
    /// Creates <paramref name="path"/> holding <paramref name="contents"/> with
    /// <paramref name="mode"/> (less the umask) from its first byte on: the data goes to a
    /// new temporary file opened with O_CREAT|O_EXCL and that mode, which is then renamed
    /// (overwrite) or hard-linked (no overwrite, so an existing file is never replaced)
    /// into place.
    /// </summary>
    /// <exception cref="IdentityException">Exists (without overwrite), or the directory is missing or not writable.</exception>
    public static void WriteNew(string path, ReadOnlySpan<byte> contents, UnixFileMode mode, bool overwrite, string what)
    {
        if (!IdentityAlgorithms.IsLinux)
            throw new PlatformNotSupportedException(IdentityAlgorithms.LinuxOnlyMessage);
        string fullPath = Path.GetFullPath(path);
        string directory = Path.GetDirectoryName(fullPath) ?? "/";
        if (!Directory.Exists(directory))
            throw new IdentityException(IdentityErrorKind.NotFound, $"Cannot write '{path}': the directory '{directory}' does not exist; create it first.");
        if (Directory.Exists(fullPath))
            throw new IdentityException(IdentityErrorKind.AlreadyExists, $"Cannot write '{path}': it is a directory; name a file.");
        if (!overwrite && File.Exists(fullPath))
            throw AlreadyExists(path, what);

        string temporary = Path.Combine(directory, $".{Path.GetFileName(fullPath)}.{SecureRandom.NextUInt64():x16}.tmp");
        try
        {
            var options = new FileStreamOptions
            {
                Mode = FileMode.CreateNew,
                Access = FileAccess.Write,
                Share = FileShare.None,
                UnixCreateMode = mode,
                BufferSize = 0,
            };
            using (var stream = new FileStream(temporary, options))
            {
                stream.Write(contents);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temporary, fullPath, overwrite);
        }
        catch (IOException) when (!overwrite && File.Exists(fullPath))
        {
            throw AlreadyExists(path, what);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IdentityException(IdentityErrorKind.Io, $"Cannot write '{path}': {e.Message}", e);
        }
        finally
        {
            File.Delete(temporary);
        }
    }

    /// <summary>Opens <paramref name="path"/> read-only without following a final symbolic
    /// link, and checks its owner on the open descriptor.</summary>
    private static unsafe SafeFileHandle Open(string path, string what, bool allowDescriptorAlias)
    {
        bool descriptorAlias = allowDescriptorAlias && IsDescriptorAlias(path);
        int fd = Libc.open(path, Libc.O_RDONLY | Libc.O_CLOEXEC | (descriptorAlias ? 0 : Libc.O_NOFOLLOW));
        if (fd < 0)
        {
            int errno = Libc.LastErrno;
            throw errno switch
            {
                Libc.ENOENT or Libc.ENOTDIR =>
                    new IdentityException(IdentityErrorKind.NotFound, $"'{path}' does not exist; name an existing {what}."),
                Libc.ELOOP =>
                    new IdentityException(IdentityErrorKind.InsecureFile,
                        $"'{path}' is a symbolic link{LinkTarget(path)}, and a {what} is only read from the file itself, so that nobody can point tibet " +
                        "at another file. Name the file it points to instead."),
                _ => new IdentityException(IdentityErrorKind.Io, $"Cannot read '{path}': {Libc.ErrorMessage(errno)}."),
            };
        }
        var handle = new SafeFileHandle(fd, ownsHandle: true);
        Libc.Stat status;
        if (Libc.fstat(fd, &status) != 0)
        {
            int errno = Libc.LastErrno;
            handle.Dispose();
            throw new IdentityException(IdentityErrorKind.Io, $"Cannot examine '{path}': {Libc.ErrorMessage(errno)}.");
        }
        uint type = status.st_mode & Libc.S_IFMT;
        if (type == Libc.S_IFDIR)
        {
            handle.Dispose();
            throw new IdentityException(IdentityErrorKind.Io, $"'{path}' is a directory, not a {what}.");
        }
        uint me = Libc.geteuid();
        // A pipe or terminal behind /dev/stdin belongs to whoever made it; its data is ours to read.
        bool ownerMatters = !descriptorAlias || type == Libc.S_IFREG;
        if (ownerMatters && status.st_uid != me && status.st_uid != 0)
        {
            handle.Dispose();
            throw new IdentityException(IdentityErrorKind.InsecureFile,
                $"'{path}' belongs to user {status.st_uid}, not to you (user {me}), and a {what} is only read from your own files: " +
                "another user could have written it. Copy it into a file of your own if you trust its contents (cp, then chmod 600).");
        }
        return handle;
    }

    /// <summary>/dev/stdin, /dev/fd/N, /proc/self/fd/N: names of a descriptor this process
    /// already holds (how a shell passes &lt;(...) or a pipe).</summary>
    private static bool IsDescriptorAlias(string path) =>
        path is "/dev/stdin" || IsNumberedUnder(path, "/dev/fd/") || IsNumberedUnder(path, "/proc/self/fd/");

    private static bool IsNumberedUnder(string path, string prefix) =>
        path.StartsWith(prefix, StringComparison.Ordinal) && path.Length > prefix.Length && path.AsSpan(prefix.Length).IndexOfAnyExceptInRange('0', '9') < 0;

    private static string LinkTarget(string path)
    {
        try
        {
            return new FileInfo(path).LinkTarget is { } target ? $" (to '{target}')" : "";
        }
        catch (IOException)
        {
            return "";
        }
    }

    private static void RequirePrivate(SafeFileHandle handle, string path, string what)
    {
        if (!IdentityAlgorithms.IsLinux)
            throw new PlatformNotSupportedException(IdentityAlgorithms.LinuxOnlyMessage);
        int permissions = (int)File.GetUnixFileMode(handle) & 0b111_111_111;
        if ((permissions & GroupAndOtherBits) != 0)
            throw new IdentityException(IdentityErrorKind.PermissionsTooOpen,
                $"permissions {Octal(permissions)} for '{path}' are too open: a {what} must not be accessible by group or others. " +
                $"Run: chmod 600 {ShellQuote(path)}");
    }

    private static IdentityException AlreadyExists(string path, string what) =>
        new(IdentityErrorKind.AlreadyExists, $"'{path}' already exists; refusing to overwrite a {what}. Choose another name, or ask for it to be replaced (tibet: --force).");

    internal static string Octal(int permissions) => "0" + Convert.ToString(permissions, 8).PadLeft(3, '0');

    /// <summary>Quotes a path for the suggested shell command when it needs quoting.</summary>
    internal static string ShellQuote(string path)
    {
        foreach (char c in path)
            if (!(char.IsAsciiLetterOrDigit(c) || c is '/' or '.' or '_' or '-' or '+' or ':' or '@' or ','))
                return "'" + path.Replace("'", "'\\''", StringComparison.Ordinal) + "'";
        return path;
    }
}
