//! HTTP admin API for atocore backups (routes arrive with their own issue).
