using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Tibet.Core.Identity;

/// <summary>
/// What tibet-run hands to the interposer inside the program: the secret identity (with
/// its passphrase already applied, since the program cannot ask for one) and the
/// clearance claim. It travels through an inherited memfd_secret descriptor named by
/// <see cref="DescriptorVariable"/>, never as bytes in the environment, which any
/// process of the same user can read in /proc/PID/environ.
/// </summary>
/// <remarks>
/// Layout, little-endian: "TBHO" ‖ version 1 ‖ u16 n ‖ the unprotected secret identity
/// body (n bytes, see SecretIdentityFormat) ‖ u16 m ‖ the claim's binary encoding (m
/// bytes; 0 when no claim was given). Nothing follows. The message is not authenticated:
/// whoever can write the descriptor can already run code as the user.
/// </remarks>
public static class IdentityHandOff
{
    /// <summary>The environment variable that names the descriptor.</summary>
    public const string DescriptorVariable = "TIBET_IDENTITY_FD";

    /// <summary>No hand-off is longer (a claim is at most a few KiB).</summary>
    public const int MaxSize = 16 * 1024;

    private const byte Version = 1;
    private static ReadOnlySpan<byte> Magic => "TBHO"u8;

    /// <summary>
    /// Loads the secret identity at <paramref name="identityPath"/> (refused when others can
    /// read it; a passphrase is asked of <paramref name="passphraseProvider"/> only when it
    /// is protected) and encodes it with <paramref name="claim"/> into a new pinned array
    /// that the caller wipes.
    /// </summary>
    /// <exception cref="IdentityException">The identity file is missing, open to others,
    /// malformed, or its passphrase is missing or wrong.</exception>
    public static byte[] Prepare(string identityPath, Func<Passphrase>? passphraseProvider, Claim? claim, out PublicIdentity identity)
    {
        ArgumentNullException.ThrowIfNull(identityPath);
        byte[] claimBytes = claim?.Encode() ?? [];
        int bodySize = SecretIdentityFormat.UnprotectedBodySize;
        byte[] message = GC.AllocateArray<byte>(Magic.Length + 1 + 2 + bodySize + 2 + claimBytes.Length, pinned: true);
        try
        {
            Magic.CopyTo(message);
            message[4] = Version;
            BinaryPrimitives.WriteUInt16LittleEndian(message.AsSpan(5), (ushort)bodySize);
            using (Identity loaded = IdentityFile.ReadSecretForHandOff(identityPath, passphraseProvider, message.AsSpan(7, bodySize)))
                identity = loaded.Public;
            BinaryPrimitives.WriteUInt16LittleEndian(message.AsSpan(7 + bodySize), (ushort)claimBytes.Length);
            claimBytes.CopyTo(message.AsSpan(9 + bodySize));
            return message;
        }
        catch
        {
            CryptographicOperations.ZeroMemory(message);
            throw;
        }
    }

    /// <summary>Decodes a hand-off. The caller wipes <paramref name="message"/> afterwards
    /// and disposes the identity.</summary>
    /// <exception cref="IdentityException">Anything but a well-formed hand-off; the message
    /// says what is wrong, naming <paramref name="sourceName"/>.</exception>
    public static (Identity Identity, Claim? Claim) Open(ReadOnlySpan<byte> message, string sourceName)
    {
        if (message.Length < 7 || !message.StartsWith(Magic) || message[4] != Version)
            throw Malformed(sourceName, "it does not start with the hand-off magic \"TBHO\" and version 1");
        int bodySize = BinaryPrimitives.ReadUInt16LittleEndian(message[5..]);
        if (message.Length < 9 + bodySize)
            throw Malformed(sourceName, $"it ends inside its identity ({message.Length} bytes)");
        int claimSize = BinaryPrimitives.ReadUInt16LittleEndian(message[(7 + bodySize)..]);
        if (message.Length != 9 + bodySize + claimSize)
            throw Malformed(sourceName, $"it is {message.Length} bytes long, and its lengths say {9 + bodySize + claimSize}");

        Claim? claim = null;
        if (claimSize > 0 && !Claim.TryDecode(message.Slice(9 + bodySize, claimSize), out claim, out _, out string problem))
            throw Malformed(sourceName, "its claim is not a claim: " + problem);
        Identity identity = SecretIdentityFormat.Decode(message.Slice(7, bodySize), passphraseProvider: null, sourceName);
        return (identity, claim);
    }

    private static IdentityException Malformed(string sourceName, string problem) =>
        new(IdentityErrorKind.Malformed, $"{sourceName} is not an identity hand-off from tibet-run: {problem}. Start the program with tibet-run --identity.");
}
