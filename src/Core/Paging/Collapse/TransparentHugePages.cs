namespace Tibet.Core.Paging.Collapse;

/// <summary>Whether the kernel gives transparent huge pages to a range that asks for them
/// (MADV_HUGEPAGE): its setting is "always" or "madvise", not "never". Read once.</summary>
internal static class TransparentHugePages
{
    private const string SettingPath = "/sys/kernel/mm/transparent_hugepage/enabled";

    public static bool Enabled { get; } = ReadEnabled();

    private static bool ReadEnabled()
    {
        try
        {
            // "always [madvise] never": the selected one is bracketed.
            string setting = File.ReadAllText(SettingPath);
            return setting.Contains("[always]", StringComparison.Ordinal) || setting.Contains("[madvise]", StringComparison.Ordinal);
        }
        catch (IOException)
        {
            return false; // a kernel without THP
        }
        catch (UnauthorizedAccessException)
        {
            return false;
        }
    }
}
