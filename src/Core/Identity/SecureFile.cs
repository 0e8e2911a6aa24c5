using System.Security.Cryptography;
using Microsoft.Win32.SafeHandles;
using Tibet.Core.Crypto;

namespace Tibet.Core.Identity;

/// <summary>
/// Reading and writing the identity layer's small files with the care secrets need:
/// contents go into pinned buffers the caller wipes, permissions are checked on the open
/// descriptor (not the path, which could change in between), and new files are created
/// with their final mode and renamed into place, so that they are never briefly readable
/// by others or half-written.
/// </summary>
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
        using SafeFileHandle handle = Open(path, what);
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

    private static SafeFileHandle Open(string path, string what)
    {
        try
        {
            return File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new IdentityException(IdentityErrorKind.NotFound, $"'{path}' does not exist; name an existing {what}.", e);
        }
        catch (UnauthorizedAccessException e) when (Directory.Exists(path))
        {
            throw new IdentityException(IdentityErrorKind.Io, $"'{path}' is a directory, not a {what}.", e);
        }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException)
        {
            throw new IdentityException(IdentityErrorKind.Io, $"Cannot read '{path}': {e.Message}", e);
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
