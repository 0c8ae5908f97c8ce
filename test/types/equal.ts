/** true when A and B are the same type (not merely assignable either way). */
export type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;

/**
 * Koa's Context has an index signature (DefaultContext: `[key: PropertyKey]: any`), so any
 * property compiles on it, as `any`: a property nobody typed is proven absent by being `any`
 * there, and by a compile error on ExtendableContext, which has no index signature.
 */
export type IsAny<T> = 0 extends 1 & T ? true : false;
