/** Types for preprocess.js (plain JavaScript so that the browser can load it too; see that file). */
export declare const MNIST_MEAN: number;
export declare const MNIST_STD: number;
export declare const SIDE: number;
export declare const BOX: number;
export declare function rgbaToGray(rgba: ArrayLike<number>, width: number, height: number): Float32Array;
export declare function invertIfLight(gray: Float32Array): Float32Array;
export declare function resizeArea(src: Float32Array, sw: number, sh: number, dw: number, dh: number): Float32Array;
export declare function centreDigit(gray: Float32Array, width: number, height: number): Float32Array;
export declare function preprocessRgba(rgba: ArrayLike<number>, width: number, height: number): Float32Array;
export declare function normalise(pixels: ArrayLike<number>): Float32Array;
