/** The agent's version; the release build stamps the same string into the image tag. */
export const VERSION = "0.1.0";
