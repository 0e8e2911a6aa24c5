namespace Tibet.Cli;

/// <summary>A problem with what the user asked for (an option value, a missing
/// passphrase source); reported as "tibet: MESSAGE" with exit status 2.</summary>
internal sealed class CommandLineException(string message) : Exception(message);
