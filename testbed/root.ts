/** The checkout's root directory, with a trailing slash. */
export const ROOT = new URL("../", import.meta.url).pathname;
