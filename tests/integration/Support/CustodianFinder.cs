using System.Globalization;

namespace Tibet.IntegrationTests.Support;

/// <summary>
/// Finds the custodian that serves a program started by tibet-run: the program's
/// environment names the custodian's abstract socket (TIBET_CUSTODIAN_SOCKET),
/// /proc/net/unix gives that socket's inode, and the process holding a descriptor of that
/// inode is the custodian. (It is nobody's child that a test knows: it forks off.)
/// </summary>
internal static class CustodianFinder
{
    public static int PidServing(int programPid)
    {
        string environment = File.ReadAllText($"/proc/{programPid}/environ");
        string? name = environment.Split('\0').FirstOrDefault(v => v.StartsWith("TIBET_CUSTODIAN_SOCKET=", StringComparison.Ordinal))?["TIBET_CUSTODIAN_SOCKET=".Length..];
        if (string.IsNullOrEmpty(name))
            throw new InvalidOperationException($"pid {programPid} has no TIBET_CUSTODIAN_SOCKET: no custodian serves it");
        string? inode = null;
        foreach (string line in File.ReadLines("/proc/net/unix").Skip(1))
        {
            string[] fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length >= 8 && fields[7] == "@" + name)
                inode = fields[6];
        }
        if (inode == null)
            throw new InvalidOperationException($"no socket @{name} is listening: the custodian of pid {programPid} is gone");
        string target = $"socket:[{inode}]";
        foreach (string process in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(process), NumberStyles.None, CultureInfo.InvariantCulture, out int pid))
                continue;
            try
            {
                foreach (string fd in Directory.GetFiles($"{process}/fd"))
                {
                    try
                    {
                        if (new FileInfo(fd).LinkTarget == target)
                            return pid;
                    }
                    catch (IOException) { }
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { } // gone meanwhile
        }
        throw new InvalidOperationException($"no process holds the custodian's socket @{name}");
    }
}
