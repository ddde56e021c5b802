/**
 * Metadata keys of the retrace API, shared by the server and its clients.
 */

/** Trailing metadata of a failed ApplyConfig: the part that was applied (a ConfigDiff, binary). */
export const APPLIED_METADATA_KEY = 'retrace-applied-bin';
