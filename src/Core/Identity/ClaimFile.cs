namespace Tibet.Core.Identity;

/// <summary>Reads and writes claim files (armored text, label "TIBET CLAIM").</summary>
public static class ClaimFile
{
    private const string What = "claim file";

    /// <summary>Writes <paramref name="claim"/> as armored text, mode 0644 (a claim names
    /// keys and a clearance but grants nothing without the subject's secret identity).</summary>
    /// <exception cref="IdentityException">The file exists (without <paramref name="overwrite"/>) or cannot be written.</exception>
    public static void Write(string path, Claim claim, bool overwrite = false) =>
        SecureFile.WriteNew(path, claim.ToArmoredText(),
            UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead, overwrite, What);

    /// <summary>The raw contents of a claim file, for <see cref="ClaimVerifier.Verify(ReadOnlySpan{byte}, ClaimRequirements)"/>
    /// or <see cref="Claim.TryDecode"/>; whether they are a claim is decided there.</summary>
    /// <exception cref="IdentityException">The file is missing, unreadable or far too large.</exception>
    public static byte[] ReadAllBytes(string path)
    {
        byte[] contents = SecureFile.ReadAll(path, What, SecureFile.MaxSize, SecureFile.PermissionCheck.None, out int length);
        return contents.AsSpan(0, length).ToArray();
    }
}
