using Tibet.Cli;

// tibet COMMAND [options]: identities, signed clearance claims and the audit trail.
return TibetCommand.Run(args);
