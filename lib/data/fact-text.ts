/**
 * The data behind the long-tail demo corpus (lib/data/facts.ts) and how one fact becomes a
 * sentence: the fact tables (data/facts/elements.json, countries.json) and the sentence templates
 * and article frames (data/facts/templates.json), read at run time from the package's data folder.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { HiermemError } from '../errors.js';
import type { Rng } from '../util/random.js';

export type Domain = 'element' | 'country';
export const DOMAINS: readonly Domain[] = ['element', 'country'];

/** Where the fact tables live, resolved from the compiled location dist/lib/data/fact-text.js. */
export const FACTS_DIR: string = fileURLToPath(new URL('../../../data/facts/', import.meta.url));
const FACT_FILES: Record<Domain, string> = { element: 'elements.json', country: 'countries.json' };

export interface Entity {
  domain: Domain;
  name: string;
  /** Other names (e.g. "Aluminium", "Burma"); may be empty. */
  aliases: string[];
  /** field → short value string (units included, e.g. "3306 K"); see data/README.md for the fields. */
  facts: Record<string, string>;
}

// How often a later sentence uses a pronoun, and an article mentions an alias.
const PRONOUN_RATE = 0.35;
const ALIAS_RATE = 0.3;

// ------------------------------------------------------------------------------------------
// Loading

/** Reads data/facts/*.json. Missing or malformed files → E_IO. */
export function loadFacts(): Entity[] {
  const out: Entity[] = [];
  for (const domain of DOMAINS) {
    const path = FACTS_DIR + FACT_FILES[domain];
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(path, 'utf8'));
    } catch (err) {
      throw new HiermemError('E_IO', `cannot read the fact table ${path}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    if (!Array.isArray(raw)) throw new HiermemError('E_IO', `${path}: expected a JSON array of entities`);
    raw.forEach((rec: unknown, i) => {
      const where = `${path}: entry ${i}`;
      if (typeof rec !== 'object' || rec === null || Array.isArray(rec)) throw new HiermemError('E_IO', `${where} is not an object`);
      const { name, aliases, facts } = rec as Record<string, unknown>;
      if (typeof name !== 'string' || name === '') throw new HiermemError('E_IO', `${where} has no name`);
      if (aliases !== undefined && (!Array.isArray(aliases) || !aliases.every((a) => typeof a === 'string' && a !== ''))) {
        throw new HiermemError('E_IO', `${where} (${name}): aliases must be an array of strings`);
      }
      if (typeof facts !== 'object' || facts === null || Array.isArray(facts)) throw new HiermemError('E_IO', `${where} (${name}): facts must be an object`);
      const f: Record<string, string> = {};
      for (const [k, v] of Object.entries(facts)) {
        if (typeof v !== 'string' || v === '') throw new HiermemError('E_IO', `${where} (${name}): fact ${k} must be a non-empty string`);
        f[k] = v;
      }
      out.push({ domain, name, aliases: aliases === undefined ? [] : [...(aliases as string[])], facts: f });
    });
  }
  return out;
}

// ------------------------------------------------------------------------------------------
// Templates (data/facts/templates.json)
//
// Placeholders: {N} the entity's name (with "the" where English wants it), {Ns} its possessive,
// {V} the value, {aV} the value with "a"/"an", {Vpl} the value in the plural, {P} a pronoun subject
// ("It", "The element"), {Pp} a possessive pronoun ("Its"); in frames {B} the body, in alias
// sentences {A} the alias. Sentences are capitalised after filling. Each field has several
// sentence forms naming the entity, a few with a pronoun, and for a probed field a canonical form
// `<prompt> {V}.`: the probe prompt is that form up to " {V}.".

export interface FieldTemplates {
  canonical?: string;
  named: readonly string[];
  pronoun: readonly string[];
  /** What a value must look like to be probed (besides having no delimiter). */
  answer?: RegExp;
}

export interface Templates {
  fields: Record<Domain, Record<string, FieldTemplates>>;
  /** Article frames: {N} the name, {B} the body (the fact sentences). */
  frames: Record<Domain, readonly string[]>;
  aliasSentences: readonly string[];
  pronouns: Record<Domain, { subject: readonly string[]; possessive: readonly string[] }>;
  /** Country names English writes with "the" (the United States, the Bahamas, the Cayman Islands). */
  theName: RegExp;
}

const TEMPLATES_FILE = 'templates.json';
let templatesCache: Templates | undefined;

/** The sentence data, read once from data/facts/templates.json. Missing or malformed → E_IO. */
export function templates(): Templates {
  if (templatesCache) return templatesCache;
  const file = FACTS_DIR + TEMPLATES_FILE;
  const bad = (what: string) => new HiermemError('E_IO', `${file}: ${what}`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new HiermemError('E_IO', `cannot read the corpus templates ${file}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const obj = (v: unknown, what: string): Record<string, unknown> => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(`${what} must be an object`);
    return v as Record<string, unknown>;
  };
  const strings = (v: unknown, what: string, nonEmpty = true): string[] => {
    if (!Array.isArray(v) || (nonEmpty && v.length === 0) || !v.every((s) => typeof s === 'string' && s !== '')) {
      throw bad(`${what} must be ${nonEmpty ? 'a non-empty' : 'an'} array of strings`);
    }
    return v as string[];
  };
  const regex = (v: unknown, what: string): RegExp => {
    if (typeof v !== 'string') throw bad(`${what} must be a regular expression (string)`);
    try {
      return new RegExp(v);
    } catch {
      throw bad(`${what} is not a valid regular expression`);
    }
  };
  const top = obj(raw, 'the file');
  const fieldsIn = obj(top.fields, 'fields'), framesIn = obj(top.frames, 'frames'), pronounsIn = obj(top.pronouns, 'pronouns');
  const fields = {} as Record<Domain, Record<string, FieldTemplates>>;
  const frames = {} as Record<Domain, readonly string[]>;
  const pronouns = {} as Templates['pronouns'];
  for (const d of DOMAINS) {
    fields[d] = {};
    for (const [field, t] of Object.entries(obj(fieldsIn[d], `fields.${d}`))) {
      const where = `fields.${d}.${field}`;
      const o = obj(t, where);
      if (o.canonical !== undefined && (typeof o.canonical !== 'string' || !o.canonical.endsWith(' {V}.'))) {
        throw bad(`${where}.canonical must be a sentence ending in " {V}."`);
      }
      fields[d][field] = {
        ...(o.canonical !== undefined ? { canonical: o.canonical as string } : {}),
        named: strings(o.named, `${where}.named`),
        pronoun: strings(o.pronoun, `${where}.pronoun`, false),
        ...(o.answer !== undefined ? { answer: regex(o.answer, `${where}.answer`) } : {}),
      };
    }
    frames[d] = strings(framesIn[d], `frames.${d}`);
    const p = obj(pronounsIn[d], `pronouns.${d}`);
    pronouns[d] = { subject: strings(p.subject, `pronouns.${d}.subject`), possessive: strings(p.possessive, `pronouns.${d}.possessive`) };
  }
  templatesCache = {
    fields, frames, pronouns, aliasSentences: strings(top.aliasSentences, 'aliasSentences'), theName: regex(top.theName, 'theName'),
  };
  return templatesCache;
}

/** Generic sentence forms for a field without its own templates (custom entities). */
function genericTemplates(field: string): FieldTemplates {
  const label = field.replace(/_/g, ' ');
  return { named: [`The ${label} of {N} is {V}.`, `{Ns} ${label} is {V}.`], pronoun: [`{Pp} ${label} is {V}.`] };
}

export function templatesFor(domain: Domain, field: string): FieldTemplates {
  return templates().fields[domain][field] ?? genericTemplates(field);
}

function nameRef(e: Entity): string {
  return e.domain === 'country' && templates().theName.test(e.name) ? `the ${e.name}` : e.name;
}

function possessive(s: string): string {
  return s.endsWith('s') ? `${s}'` : `${s}'s`;
}

function withArticle(v: string): string {
  return `${/^[aeiou]/i.test(v) ? 'an' : 'a'} ${v}`;
}

function plural(v: string): string {
  return v.endsWith('s') ? `${v}es` : `${v}s`;
}

function capitalise(s: string): string {
  return s.length === 0 ? s : s[0]!.toUpperCase() + s.slice(1);
}

function pick<T>(rng: Rng, list: readonly T[]): T {
  return list[rng.int(list.length)]!;
}

function fill(template: string, e: Entity, value: string, rng: Rng): string {
  const ref = nameRef(e);
  const pro = templates().pronouns[e.domain];
  return capitalise(
    template.replace(/\{(Ns|N|aV|Vpl|V|Pp|P)\}/g, (_m, key: string) => {
      switch (key) {
        case 'N':
          return ref;
        case 'Ns':
          return possessive(ref);
        case 'V':
          return value;
        case 'aV':
          return withArticle(value);
        case 'Vpl':
          return plural(value);
        case 'P':
          return pick(rng, pro.subject);
        default:
          return pick(rng, pro.possessive);
      }
    }),
  );
}

/** The probe prompt of a field's canonical form: everything before " {V}.". */
export function canonicalPrompt(e: Entity, t: FieldTemplates): string | undefined {
  if (t.canonical === undefined) return undefined;
  const head = t.canonical.slice(0, -' {V}.'.length);
  return capitalise(head.replace(/\{N\}/g, nameRef(e)));
}

/** One fact of a document: its field, and how it is stated. */
export interface Slot {
  field: string;
  probed: boolean;
  /** Stated in the canonical probe form `<prompt> <answer>.`. */
  canonical: boolean;
}

/** One article about `e` stating the facts of `slots`, in shuffled order, inside a random frame. */
export function renderDocument(rng: Rng, e: Entity, slots: readonly Slot[]): string {
  const order = rng.shuffle([...slots]);
  const sentences: string[] = [];
  order.forEach((slot, i) => {
    const t = templatesFor(e.domain, slot.field);
    const value = e.facts[slot.field]!;
    let template: string;
    if (slot.canonical && t.canonical !== undefined) template = t.canonical;
    else if (i > 0 && t.pronoun.length > 0 && rng.uniform() < PRONOUN_RATE) template = pick(rng, t.pronoun);
    // A probed fact's non-canonical statements are paraphrases; other facts use any form.
    else template = pick(rng, slot.probed || t.canonical === undefined ? t.named : [...t.named, t.canonical]);
    sentences.push(fill(template, e, value, rng));
  });
  if (e.aliases.length > 0 && rng.uniform() < ALIAS_RATE) {
    const aliasName = pick(rng, e.aliases);
    const alias = fill(pick(rng, templates().aliasSentences), e, '', rng).replace('{A}', () => aliasName);
    sentences.splice(Math.min(1, sentences.length), 0, alias);
  }
  const body = sentences.join(' ');
  const frame = pick(rng, templates().frames[e.domain]);
  const ref = nameRef(e);
  return capitalise(frame.replace(/\{N\}/g, () => ref).replace('{B}', () => body));
}
