// The ggrok release version, shared by relay and client (a test keeps it equal to package.json).
export const VERSION = '0.1.0';
