using Tibet.Core.Crypto;

namespace Tibet.Bench;

/// <summary>The page ciphers the benchmarks measure side by side.</summary>
internal static class PageCiphers
{
    /// <summary>AES-256-GCM (the default) and AEGIS-256, less any this CPU cannot run
    /// in hardware (each one left out is named on stdout).</summary>
    public static List<PageCipherSuite> Supported()
    {
        var suites = new List<PageCipherSuite>();
        foreach (var suite in (PageCipherSuite[])[PageCipherSuite.Aes256Gcm, PageCipherSuite.Aegis256])
        {
            try
            {
                suite.RequireSupported();
                suites.Add(suite);
            }
            catch (PlatformNotSupportedException e)
            {
                Console.WriteLine($"cipher {suite.Name} left out: {e.Message}");
            }
        }
        return suites;
    }
}
