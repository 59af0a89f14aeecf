import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { parseAllDocuments } from 'yaml';

/**
 * Offline validation of Kubernetes manifests against the Kubernetes API's published OpenAPI schemas (issue #16).
 *
 * The schemas come from kubernetes-models (npm), generated from Kubernetes v1.33.0's OpenAPI spec: each kind has an
 * ajv validator compiled from its schema (required fields, types, enums, int32 ranges) and TypeScript declarations
 * generated from the same schema. JSON schema validation alone lets unknown fields through (the OpenAPI spec does
 * not forbid additional properties), while `kubectl apply` (--validate=strict, its default) rejects them; so every
 * object's keys are also checked against the properties its type declares, as kubeconform's -strict does.
 * PodMonitor comes from @kubernetes-models/prometheus-operator (the Prometheus Operator's CRD schema), same form.
 */

const REPO = fileURLToPath(new URL('../..', import.meta.url));

export interface ManifestDoc {
  /** File (relative to the kustomization) and position in it, for messages. */
  source: string;
  doc: Record<string, unknown>;
}

/** The model module of an apiVersion/kind: kubernetes-models for the built-in API, the operator package for CRDs. */
function modelModule(apiVersion: string, kind: string): string | undefined {
  if (apiVersion === 'monitoring.coreos.com/v1') return `@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/${kind}`;
  if (!/^([a-z0-9.-]+\/)?v\d+((alpha|beta)\d+)?$/.test(apiVersion) || !/^[A-Z][A-Za-z]+$/.test(kind)) return undefined;
  return `kubernetes-models/${apiVersion}/${kind}`;
}

const kindKey = (doc: Record<string, unknown>): string => `${String(doc.apiVersion)} ${String(doc.kind)}`;

export function readYamlDocs(file: string, source: string): ManifestDoc[] {
  return parseAllDocuments(readFileSync(file, 'utf8')).map((d, i) => {
    if (d.errors.length > 0) throw new Error(`${source}: YAML error: ${d.errors[0]!.message}`);
    return { source: `${source}#${i}`, doc: d.toJS() as Record<string, unknown> };
  }).filter(({ doc }) => doc !== null);
}

/**
 * What `kustomize build DIR` produces for the kustomization features used here (resources, images), without the
 * kustomize binary: each resource file's documents, with images renamed. The test compares it with
 * `kubectl kustomize` where kubectl exists, so this stand-in cannot drift from the real one unnoticed.
 */
export function assembleKustomization(dir: string): ManifestDoc[] {
  const kustomization = readYamlDocs(join(dir, 'kustomization.yaml'), 'kustomization.yaml')[0]!.doc;
  const known = new Set(['apiVersion', 'kind', 'resources', 'images']);
  const unsupported = Object.keys(kustomization).filter((k) => !known.has(k));
  if (unsupported.length > 0) throw new Error(`kustomization.yaml uses ${unsupported.join(', ')}: teach assembleKustomization (test/helpers/k8s-schema.ts) to apply it`);
  const images = (kustomization.images ?? []) as { name: string; newName?: string; newTag?: string }[];
  const rename = (image: string): string => {
    const [name, tag] = image.split(':') as [string, string | undefined];
    const rule = images.find((i) => i.name === name);
    if (!rule) return image;
    const newTag = rule.newTag ?? tag;
    return `${rule.newName ?? name}${newTag ? `:${newTag}` : ''}`;
  };
  return ((kustomization.resources ?? []) as string[]).flatMap((file) => readYamlDocs(join(dir, file), file)).map(({ source, doc }) => {
    const copy = structuredClone(doc);
    const spec = (copy.spec as { template?: { spec?: Record<string, unknown> } } | undefined)?.template?.spec;
    for (const list of ['initContainers', 'containers']) {
      for (const c of (spec?.[list] ?? []) as { image?: string }[]) if (c.image) c.image = rename(c.image);
    }
    return { source, doc: copy };
  });
}

/** `kubectl kustomize DIR` (kustomize built into kubectl), or undefined where kubectl is not installed. */
export function kubectlKustomize(dir: string): Record<string, unknown>[] | undefined {
  const run = spawnSync('kubectl', ['kustomize', dir], { encoding: 'utf8', timeout: 30_000 });
  if (run.error && (run.error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
  if (run.status !== 0) throw new Error(`kubectl kustomize ${dir} failed: ${run.stderr}`);
  return parseAllDocuments(run.stdout).map((d) => d.toJS() as Record<string, unknown>);
}

/** The TypeScript checker over the models' declarations, built once per process for the kinds asked so far. */
let checkerFor: { kinds: string[]; checker: ts.TypeChecker; types: Map<string, ts.Type> } | undefined;

function kindTypes(keys: string[]): { checker: ts.TypeChecker; types: Map<string, ts.Type> } {
  if (checkerFor && keys.every((k) => checkerFor!.kinds.includes(k))) return checkerFor;
  const kinds = [...new Set([...(checkerFor?.kinds ?? []), ...keys])];
  const entry = resolve(REPO, 'test/helpers/__k8s-kinds__.ts');
  const source = [
    ...kinds.map((k, i) => {
      const [apiVersion, kind] = k.split(' ') as [string, string];
      return `import type { I${kind} as Kind${i} } from ${JSON.stringify(modelModule(apiVersion, kind))};`;
    }),
    `export interface Kinds { ${kinds.map((k, i) => `${JSON.stringify(k)}: Kind${i};`).join(' ')} }`,
  ].join('\n');
  const options: ts.CompilerOptions = { module: ts.ModuleKind.ESNext, moduleResolution: ts.ModuleResolutionKind.Bundler, target: ts.ScriptTarget.ES2022, strict: true, noEmit: true, skipLibCheck: true, types: [] };
  const host = ts.createCompilerHost(options);
  const { getSourceFile, fileExists, readFile } = host;
  host.getSourceFile = (name, version, ...rest) => (resolve(name) === entry ? ts.createSourceFile(name, source, version) : getSourceFile.call(host, name, version, ...rest));
  host.fileExists = (name) => resolve(name) === entry || fileExists.call(host, name);
  host.readFile = (name) => (resolve(name) === entry ? source : readFile.call(host, name));
  const program = ts.createProgram([entry], options, host);
  const unresolved = program.getSemanticDiagnostics(program.getSourceFile(entry));
  if (unresolved.length > 0) throw new Error(`model declarations did not load: ${ts.flattenDiagnosticMessageText(unresolved[0]!.messageText, '\n')}`);
  const checker = program.getTypeChecker();
  const file = program.getSourceFile(entry)!;
  const kindsType = checker.getDeclaredTypeOfSymbol(checker.getSymbolAtLocation(file)!.exports!.get(ts.escapeLeadingUnderscores('Kinds'))!);
  const types = new Map(kinds.map((k) => [k, checker.getTypeOfSymbol(kindsType.getProperty(k)!)]));
  checkerFor = { kinds, checker, types };
  return checkerFor;
}

/** Keys that no property of their object's type declares: what `kubectl apply` reports as `unknown field`. */
function unknownFields(checker: ts.TypeChecker, value: unknown, declared: ts.Type, path: string, errors: string[]): void {
  if (value === null || typeof value !== 'object') return; // scalars: the JSON schema checks them
  const type = checker.getNonNullableType(declared);
  if (Array.isArray(value)) {
    const element = checker.getIndexTypeOfType(type, ts.IndexKind.Number);
    if (element) value.forEach((item, i) => unknownFields(checker, item, element, `${path}/${i}`, errors));
    return;
  }
  // int-or-string, quantities and the like are unions of scalars; an object value there is the schema's to reject.
  const objects = (type.isUnion() ? type.types : [type]).filter((t) => (t.flags & ts.TypeFlags.Object) !== 0);
  if (objects.length !== 1) return;
  const objectType = objects[0]!;
  const index = checker.getIndexTypeOfType(objectType, ts.IndexKind.String);
  const properties = checker.getPropertiesOfType(objectType);
  if (properties.length === 0 && !index) return; // free-form in the schema (RawExtension and the like)
  for (const [key, child] of Object.entries(value as Record<string, unknown>)) {
    const property = checker.getPropertyOfType(objectType, key);
    if (property) unknownFields(checker, child, checker.getTypeOfSymbol(property), `${path}/${key}`, errors);
    else if (index) unknownFields(checker, child, index, `${path}/${key}`, errors);
    else errors.push(`${path}/${key}: unknown field "${key}"; known here: ${properties.map((p) => p.name).join(', ')}`);
  }
}

interface SchemaError { instancePath: string; message?: string }

/**
 * Every schema error of one document, as "/json/pointer: message"; [] when it is valid. A kind with no schema is
 * an error too (kubeconform's default), not a silent pass.
 */
export async function validateManifest(doc: Record<string, unknown>): Promise<string[]> {
  const apiVersion = String(doc.apiVersion);
  const kind = String(doc.kind);
  const module = modelModule(apiVersion, kind);
  if (!module) return [`no schema for apiVersion ${apiVersion}, kind ${kind}`];
  let Model: (new (data: unknown) => { validate(): void }) | undefined;
  try {
    Model = ((await import(module)) as Record<string, unknown>)[kind] as typeof Model;
  } catch {
    return [`no schema for apiVersion ${apiVersion}, kind ${kind} (${module} does not exist)`];
  }
  if (!Model) return [`no schema for apiVersion ${apiVersion}, kind ${kind}`];
  const errors: string[] = [];
  try {
    new Model(doc).validate();
  } catch (err) {
    const details = (err as { errors?: SchemaError[] }).errors;
    if (details?.length) errors.push(...details.map((e) => `${e.instancePath || '/'}: ${e.message ?? 'invalid'}`));
    else errors.push((err as Error).message);
  }
  const { checker, types } = kindTypes([kindKey(doc)]);
  unknownFields(checker, doc, types.get(kindKey(doc))!, '', errors);
  return errors;
}

/** Loads the declarations for these kinds in one program (one parse instead of one per kind). */
export function preloadKinds(docs: readonly Record<string, unknown>[]): void {
  kindTypes([...new Set(docs.map(kindKey))]);
}
