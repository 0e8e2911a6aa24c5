using System.Security.Cryptography;

namespace Tibet.Core.Identity;

/// <summary>
/// Reads and writes identity files: NAME.id (secret: mode 0600, refused when group or
/// others can read it, optionally passphrase-protected) and NAME.pub (public, safe to
/// share). Both are armored text (see <c>src/Core/Identity/README.md</c>).
/// </summary>
public static class IdentityFile
{
    /// <summary>File name extension of a secret identity.</summary>
    public const string SecretExtension = ".id";

    /// <summary>File name extension of a public identity.</summary>
    public const string PublicExtension = ".pub";

    internal const string PublicArmorLabel = "TIBET PUBLIC IDENTITY";
    internal const string WrongFileHint = "Check that you named the right file; if you did, it is damaged.";
    private const string SecretWhat = "secret identity file";
    private const string PublicWhat = "public identity file";

    /// <summary>
    /// Writes a secret identity with mode 0600, never readable by others even briefly.
    /// With a passphrase the secret keys are encrypted (Argon2id, <paramref name="cost"/>
    /// or <see cref="Argon2Cost.Default"/>, then AES-256-GCM).
    /// </summary>
    /// <exception cref="IdentityException">The file exists (without <paramref name="overwrite"/>) or cannot be written.</exception>
    /// <exception cref="InvalidOperationException">The identity was loaded from a file; only generated identities can be written.</exception>
    public static void WriteSecret(string path, Identity identity, bool overwrite = false, Passphrase? passphrase = null, Argon2Cost? cost = null)
    {
        byte[] text = EncodeSecret(identity, passphrase, cost);
        try
        {
            SecureFile.WriteNew(path, text, UnixFileMode.UserRead | UnixFileMode.UserWrite, overwrite, SecretWhat);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(text);
        }
    }

    /// <summary>Writes a public identity with mode 0644.</summary>
    /// <exception cref="IdentityException">The file exists (without <paramref name="overwrite"/>) or cannot be written.</exception>
    public static void WritePublic(string path, PublicIdentity identity, bool overwrite = false) =>
        SecureFile.WriteNew(path, EncodePublic(identity), UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead,
            overwrite, PublicWhat);

    /// <summary>
    /// Loads a secret identity. Refuses a file that group or others can access. For a
    /// protected file, <paramref name="passphraseProvider"/> is called once (and the
    /// passphrase it returns is wiped afterwards); it is never called for an unprotected one.
    /// </summary>
    /// <exception cref="IdentityException">Any problem with the file or passphrase.</exception>
    public static Identity ReadSecret(string path, Func<Passphrase>? passphraseProvider = null)
    {
        byte[] text = SecureFile.ReadAll(path, SecretWhat, SecureFile.MaxSize, SecureFile.PermissionCheck.Private, out int length);
        try
        {
            return DecodeSecret(text.AsSpan(0, length), passphraseProvider, path);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(text);
        }
    }

    /// <summary>
    /// Loads the public half of an identity from a .pub file, or from a .id file (whose
    /// public keys are stored in the clear, so no passphrase is needed; the .id file's
    /// permissions are still checked).
    /// </summary>
    /// <exception cref="IdentityException">Any problem with the file.</exception>
    public static PublicIdentity ReadPublic(string path) => ReadPublic(path, out _);

    /// <summary>Like <see cref="ReadPublic(string)"/>, and says which kind of file it was.</summary>
    /// <exception cref="IdentityException">Any problem with the file.</exception>
    public static PublicIdentity ReadPublic(string path, out IdentityFileKind kind)
    {
        byte[] text = SecureFile.ReadAll(path, PublicWhat, SecureFile.MaxSize, SecureFile.PermissionCheck.None, out int length);
        try
        {
            if (Armor.ReadLabel(text.AsSpan(0, length)) == SecretIdentityFormat.ArmorLabel)
            {
                PublicIdentity identity = WithSecretBody(path, out bool isProtected);
                kind = isProtected ? IdentityFileKind.ProtectedSecret : IdentityFileKind.Secret;
                return identity;
            }
            kind = IdentityFileKind.Public;
            return DecodePublic(text.AsSpan(0, length), path);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(text);
        }
    }

    /// <summary>Whether the secret identity at <paramref name="path"/> needs a passphrase.</summary>
    /// <exception cref="IdentityException">Any problem with the file.</exception>
    public static bool IsPassphraseProtected(string path)
    {
        WithSecretBody(path, out bool isProtected);
        return isProtected;
    }

    /// <summary>The armored text of a public identity (the contents of a .pub file).</summary>
    public static byte[] EncodePublic(PublicIdentity identity) => Armor.Encode(PublicArmorLabel, identity.Encode());

    /// <summary>Parses the armored text of a public identity; <paramref name="sourceName"/>
    /// names it in error messages.</summary>
    /// <exception cref="IdentityException">Anything but a well-formed public identity.</exception>
    public static PublicIdentity DecodePublic(ReadOnlySpan<byte> text, string sourceName)
    {
        int longest = Armor.EncodedLength(PublicArmorLabel, PublicIdentity.EncodedSize);
        if (text.Length > longest)
            throw new IdentityException(IdentityErrorKind.Malformed,
                $"'{sourceName}' is not a usable public identity: it is {text.Length} bytes long, longer than any. {WrongFileHint}");
        Span<byte> body = stackalloc byte[Armor.MaxDecodedLength(longest)];
        if (!Armor.TryDecode(PublicArmorLabel, text, body, out int length, out string armorProblem))
            throw new IdentityException(IdentityErrorKind.Malformed, $"'{sourceName}' is not a usable public identity: {armorProblem}. {WrongFileHint}");
        if (!PublicIdentity.TryDecode(body[..length], out var identity, out var kind, out string problem))
            throw new IdentityException(kind, $"'{sourceName}' is not a usable public identity: {problem}. {WrongFileHint}");
        return identity;
    }

    /// <summary>The armored text of a secret identity, in a pinned array the caller must
    /// wipe (CryptographicOperations.ZeroMemory).</summary>
    internal static byte[] EncodeSecret(Identity identity, Passphrase? passphrase, Argon2Cost? cost)
    {
        byte[] body = SecretIdentityFormat.Encode(identity, passphrase, cost ?? Argon2Cost.Default);
        try
        {
            byte[] text = GC.AllocateArray<byte>(Armor.EncodedLength(SecretIdentityFormat.ArmorLabel, body.Length), pinned: true);
            Armor.EncodeTo(SecretIdentityFormat.ArmorLabel, body, text);
            return text;
        }
        finally
        {
            CryptographicOperations.ZeroMemory(body);
        }
    }

    /// <summary>Parses the armored text of a secret identity.</summary>
    /// <exception cref="IdentityException">Anything but a well-formed identity that opens.</exception>
    internal static Identity DecodeSecret(ReadOnlySpan<byte> text, Func<Passphrase>? passphraseProvider, string sourceName)
    {
        byte[] body = DecodeSecretBody(text, sourceName, out int length);
        try
        {
            return SecretIdentityFormat.Decode(body.AsSpan(0, length), passphraseProvider, sourceName);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(body);
        }
    }

    /// <summary>Loads a secret identity like <see cref="ReadSecret"/> and also writes its
    /// unprotected body into <paramref name="unprotectedBody"/> (which the caller wipes),
    /// for <see cref="IdentityHandOff"/>.</summary>
    internal static Identity ReadSecretForHandOff(string path, Func<Passphrase>? passphraseProvider, Span<byte> unprotectedBody)
    {
        byte[] text = SecureFile.ReadAll(path, SecretWhat, SecureFile.MaxSize, SecureFile.PermissionCheck.Private, out int length);
        byte[]? body = null;
        try
        {
            body = DecodeSecretBody(text.AsSpan(0, length), path, out int bodyLength);
            return SecretIdentityFormat.DecodeToUnprotected(body.AsSpan(0, bodyLength), passphraseProvider, path, unprotectedBody);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(text);
            if (body != null)
                CryptographicOperations.ZeroMemory(body);
        }
    }

    private static PublicIdentity WithSecretBody(string path, out bool isProtected)
    {
        byte[] text = SecureFile.ReadAll(path, SecretWhat, SecureFile.MaxSize, SecureFile.PermissionCheck.Private, out int length);
        byte[]? body = null;
        try
        {
            body = DecodeSecretBody(text.AsSpan(0, length), path, out int bodyLength);
            if (!SecretIdentityFormat.TryReadPublic(body.AsSpan(0, bodyLength), out var identity, out isProtected, out var kind, out string problem))
                throw new IdentityException(kind, $"'{path}' is not a usable secret identity: {problem}. {WrongFileHint}");
            return identity;
        }
        finally
        {
            CryptographicOperations.ZeroMemory(text);
            if (body != null)
                CryptographicOperations.ZeroMemory(body);
        }
    }

    private static byte[] DecodeSecretBody(ReadOnlySpan<byte> text, string sourceName, out int length)
    {
        int longest = Armor.EncodedLength(SecretIdentityFormat.ArmorLabel, SecretIdentityFormat.MaxSize);
        if (text.Length > longest)
            throw new IdentityException(IdentityErrorKind.Malformed,
                $"'{sourceName}' is not a usable secret identity: it is {text.Length} bytes long, longer than any. {WrongFileHint}");
        byte[] body = GC.AllocateArray<byte>(Armor.MaxDecodedLength(text.Length), pinned: true);
        if (!Armor.TryDecode(SecretIdentityFormat.ArmorLabel, text, body, out length, out string problem))
        {
            CryptographicOperations.ZeroMemory(body);
            throw new IdentityException(IdentityErrorKind.Malformed, $"'{sourceName}' is not a usable secret identity: {problem}. {WrongFileHint}");
        }
        return body;
    }
}
