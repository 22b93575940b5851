"""The config table: rules (flags, parameters, routes), routes, silences and teams, changed at
run time by operators (the CLI) and read by analyze and alert through a short cache."""
