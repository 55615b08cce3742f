#!/usr/bin/env node
// Builds data/facts/elements.json and data/facts/countries.json, the fact tables behind the
// long-tail knowledge demo corpus (lib/data/facts.ts), from two npm packages installed as
// devDependencies:
//
//   periodic-table  (ISC)  118 elements x 20 fields          node_modules/periodic-table/data.json
//   countries-list  (MIT)  countries, currencies, languages  node_modules/countries-list/*.min.json
//
//   npm install            # brings both devDependencies
//   node scripts/make-facts.mjs [outDir]
//
// Output: a JSON array per domain, one entity per line:
//   { "name": "...", "aliases"?: ["..."], "facts": { "<field>": "<value>" } }
// Values are short strings; empty or unknown source values are dropped. The meaning and unit of
// every field is listed in data/README.md.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const outDir = process.argv[2] ?? join(root, 'data', 'facts');

// The versions data/README.md documents; another version still converts, with a warning.
const EXPECTED = { 'periodic-table': '0.0.8', 'countries-list': '3.4.1' };

function pkgDir(name) {
  const dir = join(root, 'node_modules', name);
  let meta;
  try {
    meta = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  } catch (err) {
    console.error(`cannot read ${name}: ${err.message}\nrun \`npm install\` first (it is a devDependency)`);
    process.exit(1);
  }
  if (meta.version !== EXPECTED[name]) {
    console.warn(`warning: ${name} is ${meta.version}, data/README.md documents ${EXPECTED[name]}; update it`);
  }
  return dir;
}

function readJson(dir, file) {
  return JSON.parse(readFileSync(join(dir, file), 'utf8'));
}

/** A source value as a trimmed string, or undefined when it is empty/unknown. */
function clean(v) {
  if (v === undefined || v === null) return undefined;
  const s = String(v).trim();
  return s === '' ? undefined : s;
}

function put(facts, field, value, unit) {
  const v = clean(value);
  if (v !== undefined) facts[field] = unit ? `${v} ${unit}` : v;
}

// ---------------------------------------------------------------- elements
const ptDir = pkgDir('periodic-table');
const elementsSrc = readJson(ptDir, 'data.json');

// The package spells these the American way; the British names become aliases.
const ELEMENT_ALIASES = { Aluminum: ['Aluminium'], Cesium: ['Caesium'], Sulfur: ['Sulphur'] };

const elements = elementsSrc.map((e) => {
  const facts = {};
  put(facts, 'atomic_number', e.atomicNumber);
  put(facts, 'symbol', e.symbol);
  // "190.23(3)" -> "190.23" (drop the uncertainty); "[280]" -> "280" (mass number of the most stable isotope)
  const mass = clean(e.atomicMass);
  if (mass !== undefined) facts.atomic_mass = mass.replace(/\(\d+\)$/, '').replace(/^\[(.*)\]$/, '$1');
  put(facts, 'group_block', e.groupBlock);
  put(facts, 'standard_state', e.standardState);
  put(facts, 'bonding_type', e.bondingType);
  put(facts, 'melting_point', e.meltingPoint, 'K');
  put(facts, 'boiling_point', e.boilingPoint, 'K');
  put(facts, 'density', e.density, 'g/cm3');
  put(facts, 'electronegativity', e.electronegativity);
  put(facts, 'ionization_energy', e.ionizationEnergy, 'kJ/mol');
  put(facts, 'atomic_radius', e.atomicRadius, 'pm');
  put(facts, 'electron_configuration', e.electronicConfiguration);
  const year = clean(e.yearDiscovered);
  if (year !== undefined) facts.discovered = /^\d{4}$/.test(year) ? year : year === 'Ancient' ? 'ancient times' : undefined;
  if (facts.discovered === undefined) delete facts.discovered;
  const entry = { name: e.name };
  if (ELEMENT_ALIASES[e.name]) entry.aliases = ELEMENT_ALIASES[e.name];
  entry.facts = facts;
  return entry;
});

// ---------------------------------------------------------------- countries
const clDir = pkgDir('countries-list');
const countriesSrc = readJson(clDir, 'countries.min.json');
const continents = readJson(clDir, 'continents.min.json');
const currencies = readJson(clDir, 'currencies.min.json');
const languages = readJson(clDir, 'languages.min.json');

// Probe answers are cut at '.', so the abbreviations in these capitals are written out.
const CAPITAL_FIXES = { 'Washington D.C.': 'Washington' };
function fixCapital(c) {
  return CAPITAL_FIXES[c] ?? c.replace(/\bSt\. /g, 'Saint ');
}

const isAscii = (s) => /^[\x20-\x7e]+$/.test(s);

const countries = [];
const skipped = [];
for (const [code, c] of Object.entries(countriesSrc)) {
  const capital = clean(c.capital);
  if (capital === undefined) {
    skipped.push(c.name); // Antarctica, Bouvet Island, ...: nothing to ask about
    continue;
  }
  const facts = {};
  facts.capital = fixCapital(capital);
  put(facts, 'continent', continents[c.continent]);
  const cur = clean(c.currency?.[0]);
  if (cur !== undefined) {
    facts.currency = cur;
    put(facts, 'currency_name', currencies[cur]?.name);
  }
  const phone = clean(c.phone?.[0]);
  if (phone !== undefined) facts.phone_code = `+${phone}`;
  put(facts, 'language', languages[c.languages?.[0]]?.name);
  facts.iso_code = code;
  const entry = { name: c.name };
  // Only plain-ASCII aliases that are not the name itself or the name with a gloss
  // (keeps Czechia: "Czech Republic", drops Myanmar: "Myanmar (Burma)").
  const aliases = (c.alias ?? []).filter((a) => isAscii(a) && a !== c.name && !a.includes('('));
  if (aliases.length > 0) entry.aliases = aliases;
  entry.facts = facts;
  countries.push(entry);
}

// ---------------------------------------------------------------- write
function serialize(entities) {
  return `[\n${entities.map((e) => JSON.stringify(e)).join(',\n')}\n]\n`;
}

mkdirSync(outDir, { recursive: true });
const count = (list) => list.reduce((n, e) => n + Object.keys(e.facts).length, 0);
writeFileSync(join(outDir, 'elements.json'), serialize(elements));
writeFileSync(join(outDir, 'countries.json'), serialize(countries));
console.log(`elements.json: ${elements.length} elements, ${count(elements)} facts`);
console.log(`countries.json: ${countries.length} countries, ${count(countries)} facts (skipped, no capital: ${skipped.join(', ')})`);
