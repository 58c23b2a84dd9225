/** The version of this sluice build. */
export const VERSION = "0.1.0";
