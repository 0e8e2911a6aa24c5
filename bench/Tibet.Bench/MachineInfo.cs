namespace Tibet.Bench;

/// <summary>Kernel release (as `uname -r`), CPU model and CPU count, for result headers.</summary>
internal static class MachineInfo
{
    public static string Read()
    {
        string kernel = ReadFirst("/proc/sys/kernel/osrelease") ?? Environment.OSVersion.VersionString;
        string cpu = "unknown CPU";
        try
        {
            string? line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
            if (line != null) cpu = line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException) { }
        return $"Linux {kernel}, {cpu}, nproc {Environment.ProcessorCount}, .NET {Environment.Version}";
    }

    private static string? ReadFirst(string path)
    {
        try { return File.ReadAllText(path).Trim(); }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }
}
