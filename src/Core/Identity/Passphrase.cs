using System.Security.Cryptography;
using System.Text;

namespace Tibet.Core.Identity;

/// <summary>
/// A passphrase held as UTF-8 bytes in a pinned array (so the garbage collector never
/// leaves copies behind) that is wiped on <see cref="Dispose"/>. Never a .NET string:
/// strings are immutable and cannot be wiped.
/// </summary>
/// <remarks>
/// Passphrases come from a file (<see cref="FromFile"/>, which includes pipes such as
/// /dev/stdin) or from a terminal prompt the caller reads into a char buffer
/// (<see cref="FromChars"/>); never from the command line or an environment variable,
/// both of which other processes of the same user can read in /proc.
/// </remarks>
public sealed class Passphrase : IDisposable
{
    /// <summary>Longest passphrase accepted, in UTF-8 bytes.</summary>
    public const int MaxLength = 1024;

    private readonly byte[] _buffer;
    private readonly int _length;
    private bool _disposed;

    private Passphrase(byte[] pinnedBuffer, int length)
    {
        _buffer = pinnedBuffer;
        _length = length;
    }

    internal ReadOnlySpan<byte> Utf8
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _buffer.AsSpan(0, _length);
        }
    }

    /// <summary>Copies a UTF-8 passphrase.</summary>
    public static Passphrase FromUtf8(ReadOnlySpan<byte> utf8)
    {
        Validate(utf8.Length, "the passphrase");
        byte[] buffer = GC.AllocateArray<byte>(utf8.Length, pinned: true);
        utf8.CopyTo(buffer);
        return new Passphrase(buffer, utf8.Length);
    }

    /// <summary>Encodes typed characters (for example read from a terminal without echo)
    /// as UTF-8; the caller wipes its char buffer.</summary>
    public static Passphrase FromChars(ReadOnlySpan<char> characters)
    {
        int length = Encoding.UTF8.GetByteCount(characters);
        Validate(length, "the passphrase");
        byte[] buffer = GC.AllocateArray<byte>(length, pinned: true);
        Encoding.UTF8.GetBytes(characters, buffer);
        return new Passphrase(buffer, length);
    }

    /// <summary>
    /// Reads a passphrase from a file: its whole contents, less one final newline. A
    /// regular file must not be readable by group or others (like the secret identity
    /// itself); pipes and descriptors (/dev/stdin, /dev/fd/3, &lt;(pass show x)) are accepted.
    /// </summary>
    /// <exception cref="IdentityException">Missing, too open, empty or too long.</exception>
    public static Passphrase FromFile(string path)
    {
        byte[] contents = SecureFile.ReadAll(path, "passphrase file", MaxLength + 2, SecureFile.PermissionCheck.IfRegularFile, out int length);
        try
        {
            int end = length;
            if (end > 0 && contents[end - 1] == (byte)'\n')
                end--;
            if (end > 0 && contents[end - 1] == (byte)'\r')
                end--;
            Validate(end, $"the passphrase in '{path}'");
            byte[] buffer = GC.AllocateArray<byte>(end, pinned: true);
            contents.AsSpan(0, end).CopyTo(buffer);
            return new Passphrase(buffer, end);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(contents);
        }
    }

    /// <summary>Whether two passphrases are the same bytes (for "type it again" prompts).</summary>
    public bool Matches(Passphrase other) => CryptographicOperations.FixedTimeEquals(Utf8, other.Utf8);

    /// <summary>Wipes the passphrase.</summary>
    public void Dispose()
    {
        CryptographicOperations.ZeroMemory(_buffer);
        _disposed = true;
    }

    private static void Validate(int length, string what)
    {
        if (length == 0)
            throw new IdentityException(IdentityErrorKind.InvalidPassphrase, $"{Capitalize(what)} is empty; an empty passphrase protects nothing. Use a real one, or no passphrase at all.");
        if (length > MaxLength)
            throw new IdentityException(IdentityErrorKind.InvalidPassphrase, $"{Capitalize(what)} is longer than {MaxLength} bytes; use a shorter one.");
    }

    private static string Capitalize(string text) => char.ToUpperInvariant(text[0]) + text[1..];
}
