//! HylaFAX spool files and processes: qfile, seqf, xferfaxlog, session log, virtual modems, DynamicConfig.
