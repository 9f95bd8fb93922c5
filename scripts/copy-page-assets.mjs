// Build step: copies the inspector page's static files (what tsc does not emit) next to its compiled script in dist/.
import { copyFileSync, mkdirSync } from 'node:fs';

const FROM = new URL('../cli/inspector/page/', import.meta.url);
const TO = new URL('../dist/cli/inspector/page/', import.meta.url);
const FILES = ['style.css'];

mkdirSync(TO, { recursive: true });
for (const name of FILES) copyFileSync(new URL(name, FROM), new URL(name, TO));
