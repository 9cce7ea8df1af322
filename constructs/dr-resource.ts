// The base of the drsite constructs: one construct is one drsite.dev/v1 document. The document is
// built and schema-checked in the constructor, so a bad prop fails where it was written, with the
// construct path in front of the message.
import { Construct } from 'constructs';
import { validateDocument } from '../src/config/index.ts';
import { API_VERSION, type Kind, type Resource } from '../src/model/desired.ts';
import { ConstructValidationError, constructDiagnostic } from './errors.ts';

const DR_RESOURCE = Symbol.for('drsite.constructs.DrResource');

/** Props every drsite construct takes besides its spec. */
export interface ResourceMetaProps {
  /**
   * metadata.name: a DNS label, unique per kind.
   * @default the construct id
   */
  readonly name?: string;
  /**
   * metadata.labels.
   * @default no labels
   */
  readonly labels?: Readonly<Record<string, string>>;
  /**
   * metadata.annotations.
   * @default no annotations
   */
  readonly annotations?: Readonly<Record<string, string>>;
}

/** Anything that names a resource of one kind: the construct itself or its metadata.name. */
export type Ref<T extends DrResource> = T | string;

export const refName = (r: Ref<DrResource>): string => (typeof r === 'string' ? r : r.name);

export abstract class DrResource<R extends Resource = Resource> extends Construct {
  /** The document's kind. */
  readonly kind: Kind;
  /** The document's metadata.name. */
  readonly name: string;
  readonly #document: R;

  /**
   * True for drsite constructs, across copies of this module: a branded symbol rather than
   * instanceof, which breaks when two copies are loaded (aws/aws-cdk #7280).
   */
  static isDrResource(x: unknown): x is DrResource {
    return typeof x === 'object' && x !== null && DR_RESOURCE in x;
  }

  protected constructor(scope: Construct, id: string, kind: Kind, meta: ResourceMetaProps, spec: object) {
    super(scope, id);
    Object.defineProperty(this, DR_RESOURCE, { value: true });
    this.kind = kind;
    this.name = meta.name ?? id;
    const metadata = { name: this.name, labels: meta.labels, annotations: meta.annotations };
    // A JSON round trip drops undefined props, so the document is exactly what YAML would hold.
    this.#document = JSON.parse(JSON.stringify({ apiVersion: API_VERSION, kind, metadata, spec })) as R;
    const result = validateDocument(this.#document);
    if (!result.valid) {
      throw new ConstructValidationError(result.errors.map((e) => constructDiagnostic(this.node.path, e.message, '', e.path)));
    }
  }

  /** The drsite.dev/v1 document as declared (defaults are applied by the tree-wide synth). */
  toDocument(): R {
    return structuredClone(this.#document);
  }
}
