namespace Tibet.Core.Paging;

/// <summary>
/// userfaultfd cannot be used in this process. The message says why and what to do.
/// </summary>
public sealed class UserfaultfdUnavailableException(string message) : Exception(message);
