// `npm run bench` runs this file: the harness itself is run.mjs.
import './run.mjs';
